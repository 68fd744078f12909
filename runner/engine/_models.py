"""Asking models: a fallback chain, each call reserved against the budgets before it is made."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.engine._registry import LlmReservation, Toolbox
from runner.errors import StepFailed
from runner.providers.base import Message, ModelRequest, ModelResponse, ToolChoice, ToolSpec
from runner.providers.finish import raise_for_finish
from tenants.kit import metrics
from tenants.kit.tracing import model_span

__all__ = ["LlmLog", "ModelParams", "Settle", "ask_models"]

Settle = Callable[[LlmReservation, ModelResponse, str], Decimal]
"""Settles one answered call (hold, response, alias) and returns what the budget ledger charged."""


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
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"


def ask_models(toolbox: Toolbox, params: ModelParams, chain: list[str], messages: list[Message], attempt: int,
               log: LlmLog, *, settle: Settle | None = None) -> tuple[ModelResponse, str, int]:
    """Ask the models of ``chain`` in order until one answers (each call reserved against the budgets first,
    from the request's real size); return (response, alias, fallbacks used). The call's cost is settled
    before its finish reason is judged: a truncated or refused answer was paid for all the same.

    ``settle`` replaces the default settlement (its own transaction): the agent loop settles in the same
    commit as the turn's checkpoint, so the ledger's charge and the run's cost cannot drift apart."""
    errors: list[str] = []
    for alias in chain:
        started = time.perf_counter()
        request = ModelRequest(model=alias, messages=messages, max_tokens=params.max_tokens,
                               temperature=params.temperature, output_schema=params.output_schema,
                               options=dict(params.options), attempt=attempt, tools=list(params.tools),
                               tool_choice=params.tool_choice if params.tools else "auto")
        hold = toolbox.reserve_llm(request)
        try:
            provider = toolbox.model(alias)
            log.calls += 1
            response = _complete(provider, request, alias)
        except StepFailed as exc:
            toolbox.settle_llm(hold, None, None, None)
            metrics.model_call(toolbox.tenant_id, toolbox.agent_name, provider=_provider_name(toolbox, alias),
                               ok=False, seconds=time.perf_counter() - started)
            if exc.category != "dependency":
                raise
            log.verdicts.append({"check": "model_call", "model": alias, "ok": False, "category": exc.category,
                                 "message": exc.reason[:300]})
            errors.append(f"{alias}: {exc.reason} ({(time.perf_counter() - started) * 1000:.0f} ms)")
            continue
        usage = response.usage
        cost = (settle(hold, response, alias) if settle is not None
                else toolbox.settle_llm(hold, usage.input_tokens, usage.output_tokens, response.cost_usd))
        log.cost += cost
        metrics.model_call(toolbox.tenant_id, toolbox.agent_name, provider=response.provider, ok=True,
                           seconds=time.perf_counter() - started, input_tokens=usage.input_tokens,
                           output_tokens=usage.output_tokens, cost_usd=cost)
        log.usage.append({"check": "model_call", "model": alias, "provider": response.provider, "ok": True,
                          "input_tokens": usage.input_tokens, "cached_input_tokens": usage.cached_input_tokens,
                          "output_tokens": usage.output_tokens, "cost_usd": str(cost),
                          "finish_reason": response.finish_reason, "tool_calls": len(response.tool_calls)})
        try:
            raise_for_finish(response, alias, max_tokens=params.max_tokens)
        except StepFailed as failure:
            failure.details.setdefault("llm_calls", log.calls)
            failure.details.setdefault("cost_usd", str(log.cost))
            failure.details.setdefault("verdicts", log.verdicts + log.usage)
            raise
        return response, alias, len(errors)
    raise StepFailed("dependency", "every model failed: " + "; ".join(errors), action="escalate",
                     details={"considered": chain, "verdicts": log.verdicts, "llm_calls": log.calls})


def _complete(provider: Any, request: ModelRequest, alias: str) -> ModelResponse:
    """One provider call inside a GenAI client span (model, tokens, finish reason, cost)."""
    config = getattr(provider, "config", None)
    model = str(getattr(config, "model", None) or alias)
    with model_span(provider=str(provider.name), model=model, max_tokens=request.max_tokens,
                    temperature=request.temperature, alias=alias) as span:
        response: ModelResponse = provider.complete(request)
        span.model_response(response_model=response.model, input_tokens=response.usage.input_tokens,
                            output_tokens=response.usage.output_tokens, finish_reasons=[response.finish_reason],
                            cost_usd=response.cost_usd)
    return response


def _provider_name(toolbox: Toolbox, alias: str) -> str:
    try:
        return str(toolbox.model(alias).name)
    except StepFailed:
        return "other"
