"""Asking models: a fallback chain, each call reserved against the budgets before it is made."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.engine._registry import Toolbox
from runner.errors import StepFailed
from runner.providers.base import Message, ModelRequest

__all__ = ["LlmLog", "ModelParams", "ask_models"]


@dataclass(slots=True)
class LlmLog:
    """What a step's model calls did, for the decision event."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    cost: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class ModelParams:
    """How to ask a model: shared by ``llm`` steps and the ``agent`` loop."""

    max_tokens: int = 1024
    temperature: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] | None = None


def ask_models(toolbox: Toolbox, params: ModelParams, chain: list[str], messages: list[Message], attempt: int,
               log: LlmLog) -> tuple[str, str, int]:
    """Ask the models of ``chain`` in order until one answers (each call reserved against the budgets
    first); return (text, alias, fallbacks used)."""
    errors: list[str] = []
    for alias in chain:
        started = time.perf_counter()
        hold = toolbox.reserve_llm(alias, sum(len(m.content) for m in messages), params.max_tokens)
        try:
            provider = toolbox.model(alias)
            log.calls += 1
            response = provider.complete(ModelRequest(
                model=alias, messages=messages, max_tokens=params.max_tokens, temperature=params.temperature,
                output_schema=params.output_schema, options=dict(params.options), attempt=attempt))
        except StepFailed as exc:
            toolbox.settle_llm(hold, None, None, None)
            if exc.category != "dependency":
                raise
            log.verdicts.append({"check": "model_call", "model": alias, "ok": False, "category": exc.category,
                                 "message": exc.reason[:300]})
            errors.append(f"{alias}: {exc.reason} ({(time.perf_counter() - started) * 1000:.0f} ms)")
            continue
        cost = toolbox.settle_llm(hold, response.usage.input_tokens, response.usage.output_tokens,
                                  response.cost_usd)
        log.cost += cost
        log.usage.append({"check": "model_call", "model": alias, "provider": response.provider, "ok": True,
                          "input_tokens": response.usage.input_tokens,
                          "output_tokens": response.usage.output_tokens, "cost_usd": str(cost)})
        return response.text, alias, len(errors)
    raise StepFailed("dependency", "every model failed: " + "; ".join(errors), action="escalate",
                     details={"considered": chain, "verdicts": log.verdicts, "llm_calls": log.calls})
