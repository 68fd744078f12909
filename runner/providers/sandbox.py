"""The built-in ``sandbox`` model: deterministic, offline, with configurable answers and latency.

Options (the llm step's ``sandbox:`` mapping):
- ``answer``: the reply (a string, or any JSON value which is returned serialised); default: a
  short deterministic reply quoting the prompt.
- ``answers``: a list; attempt N gets ``answers[N-1]`` (the last one repeats) — for testing
  validation retries.
- ``latency_ms``: sleep this long before answering.
- ``fail_times``: fail with a dependency error this many attempts first.
"""

from __future__ import annotations

import json
import time
from typing import Any

from runner.errors import StepFailed
from runner.providers.base import ModelRequest, ModelResponse, Usage

__all__ = ["SandboxModel"]


class SandboxModel:
    """Deterministic model used by demos and tests."""

    name = "sandbox"

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        opts = request.options
        latency = float(opts.get("latency_ms", 0))
        if latency > 0:
            time.sleep(latency / 1000)
        if request.attempt <= int(opts.get("fail_times", 0)):
            raise StepFailed("dependency", f"sandbox model failure {request.attempt} (fail_times)")
        prompt = request.messages[-1].content if request.messages else ""
        answer: Any
        if opts.get("answers"):
            answers = list(opts["answers"])
            answer = answers[min(request.attempt, len(answers)) - 1]
        elif "answer" in opts:
            answer = opts["answer"]
        else:
            answer = f"[sandbox] {prompt[:200]}"
        text = answer if isinstance(answer, str) else json.dumps(answer)
        usage = Usage(input_tokens=max(1, len(prompt) // 4), output_tokens=max(1, len(text) // 4))
        return ModelResponse(text=text, model="sandbox", provider="sandbox", usage=usage,
                             latency_ms=(time.perf_counter() - started) * 1000, finish_reason="stop")
