"""The built-in ``sandbox`` model: deterministic, offline, speaking the real wire formats inside.

Options (the step's ``sandbox:`` mapping; unknown keys are an error):

- ``turns``: a script, one :class:`~runner.providers.scripted.Turn` per model turn: turn N answers
  a conversation that already holds N assistant turns (so a resumed run gets the same answers);
  the last turn repeats. A turn has ``tool_calls: [{name, arguments | raw_arguments, id?}]``
  (several calls in one turn allowed), ``text``, ``final`` (the structured answer), ``refusal``,
  ``finish_reason`` (``length``, ``content_filter``, ...) and ``usage``.
- ``policy: call_each_tool_once``: instead of a script, call every offered tool once (arguments
  made up from its schema; all in one turn, or one per turn with ``parallel: false``), then
  answer ``final`` (default: an example of the output schema, or a short text).
- ``format``: ``openai`` (default) or ``anthropic``: the wire format the sandbox builds and
  parses, through the same functions as the remote providers, so its :class:`ModelResponse` is
  exactly what a real provider would return for that answer.
- ``answer`` / ``answers`` (attempt N gets ``answers[N-1]``, the last repeats): a plain answer,
  for ``llm`` steps and validation retries.
- ``latency_ms``: sleep this long first; ``fail_times``: fail with a dependency error this many
  attempts first.

Every request is first checked like the APIs do (:func:`~runner.providers.scripted.check_request`),
so a conversation a real API would reject with a 400 (a tool call left without its result) fails
here too, as a non-retryable ``dependency`` failure.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runner.errors import StepFailed
from runner.providers.anthropic import messages_request, read_message
from runner.providers.base import ModelRequest, ModelResponse, ToolNames
from runner.providers.openai_compat import chat_request, read_chat_completion
from runner.providers.remote import ModelConfig
from runner.providers.scripted import ScriptedUsage, Turn, WireFormat, answer, check_request, policy_turn, turn_index

__all__ = ["SandboxModel", "SandboxOptions", "parse_options"]

MAX_LATENCY_MS = 600_000


class SandboxOptions(BaseModel):
    """The ``sandbox:`` mapping of an ``llm`` or ``agent`` step (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: WireFormat = "openai"
    turns: list[Turn] | None = Field(default=None, min_length=1, max_length=200)
    policy: Literal["call_each_tool_once"] | None = None
    parallel: bool = True
    final: Any = None
    answer: Any = None
    answers: list[Any] | None = Field(default=None, min_length=1, max_length=200)
    latency_ms: float = Field(default=0, ge=0, le=MAX_LATENCY_MS)
    fail_times: int = Field(default=0, ge=0, le=1000)

    @model_validator(mode="after")
    def _one_mode(self) -> SandboxOptions:
        modes = [name for name in ("turns", "policy", "answers") if getattr(self, name) is not None]
        if "answer" in self.model_fields_set:
            modes.append("answer")
        if len(modes) > 1:
            raise ValueError(f"use one of turns, policy, answer, answers (got {', '.join(modes)})")
        return self


def parse_options(options: dict[str, Any]) -> SandboxOptions:
    """Validate a step's ``sandbox:`` mapping; StepFailed("validation") naming the bad field."""
    try:
        return SandboxOptions.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(options)"
        raise StepFailed("validation", f"sandbox options: {where}: {first['msg']}", action="escalate",
                         details={"field": where}) from None


def _estimated_usage(turn: Turn, request: ModelRequest) -> ScriptedUsage:
    """About four characters a token, counted on the normalised request, so both formats agree."""
    prompt = sum(len(m.content) + sum(len(c.arguments_json()) for c in m.tool_calls) for m in request.messages)
    prompt += sum(len(t.name) + len(t.description) + len(json.dumps(dict(t.parameters))) for t in request.tools)
    output = len(turn.text or "") + len(turn.refusal or "") + len(json.dumps(turn.final) if turn.has_final else "")
    output += sum(len(c.name) + len(c.raw_arguments or json.dumps(c.arguments)) for c in turn.tool_calls)
    return ScriptedUsage(input_tokens=max(1, prompt // 4), output_tokens=max(1, output // 4))


class SandboxModel:
    """Deterministic model used by demos, tests and rehearsals (see the module docstring).

    With a ``config`` (an alias of provider ``sandbox`` configured with prices) calls are priced
    like a remote model's.
    """

    name = "sandbox"

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config
        self._local = threading.local()

    @property
    def last_exchange(self) -> tuple[WireFormat, dict[str, Any], dict[str, Any]] | None:
        """This thread's latest (wire format, request body, response body), for tests and debugging."""
        found: tuple[WireFormat, dict[str, Any], dict[str, Any]] | None = getattr(self._local, "exchange", None)
        return found

    @staticmethod
    def _turn(opts: SandboxOptions, request: ModelRequest, body: dict[str, Any]) -> Turn:
        """The turn to play."""
        fmt = opts.format
        if opts.turns is not None:
            return opts.turns[min(turn_index(body), len(opts.turns) - 1)]
        if opts.policy is not None:
            return policy_turn(body, fmt, final=opts.final, has_final="final" in opts.model_fields_set,
                               parallel=opts.parallel)
        prompt = request.messages[-1].content if request.messages else ""
        value: Any
        if opts.answers is not None:
            value = opts.answers[min(request.attempt, len(opts.answers)) - 1]
        elif "answer" in opts.model_fields_set:
            value = opts.answer
        else:
            value = f"[sandbox] {prompt[:200]}"
        text = value if isinstance(value, str) else json.dumps(value)
        usage = ScriptedUsage(input_tokens=max(1, len(prompt) // 4), output_tokens=max(1, len(text) // 4))
        if request.output_schema is not None and fmt == "anthropic":
            try:  # a structured answer travels through the output tool, as a real model's would
                return Turn(final=json.loads(text), usage=usage)
            except ValueError:
                pass
        return Turn(text=text, usage=usage)

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request`` from the step's script (see the module docstring)."""
        started = time.perf_counter()
        self._local.exchange = None
        opts = parse_options(request.options)
        if opts.latency_ms > 0:
            time.sleep(opts.latency_ms / 1000)
        if request.attempt <= opts.fail_times:
            raise StepFailed("dependency", f"sandbox model failure {request.attempt} (fail_times)")
        fmt = opts.format
        body = (chat_request(request, model="sandbox") if fmt == "openai"
                else messages_request(request, model="sandbox"))
        problem = check_request(body, fmt)
        if problem is not None:
            raise StepFailed("dependency", f"sandbox model: the {fmt} API would reject this request: {problem}",
                             details={"status": 400, "retryable": False})
        turn = self._turn(opts, request, body)
        if turn.usage is None:
            turn = turn.model_copy(update={"usage": _estimated_usage(turn, request)})
        names = ToolNames(t.name for t in request.tools)
        wrap = request.output_schema is not None and request.output_schema.get("type") != "object"
        data = answer(turn, body, fmt, names=names, wrap_final=wrap)
        self._local.exchange = (fmt, body, data)
        read = read_chat_completion if fmt == "openai" else read_message
        response = read(data, request, provider="sandbox", default_model="sandbox")
        cost = self.config.cost(response.usage) if self.config is not None else None
        return ModelResponse(
            text=response.text, model="sandbox", provider="sandbox", usage=response.usage,
            cost_usd=cost if cost is not None else Decimal(0), latency_ms=(time.perf_counter() - started) * 1000,
            tool_calls=response.tool_calls, finish_reason=response.finish_reason,
            raw_finish_reason=response.raw_finish_reason, refusal=response.refusal)
