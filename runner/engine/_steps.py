"""Executing one step: render its arguments, call the tool or model, validate the output."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.engine._registry import Toolbox
from runner.errors import RuleError, StepFailed, TemplateError
from runner.jsonschemas import validator_for
from runner.providers.base import Message, ModelRequest
from runner.rules import compile_rule
from runner.spec import Step
from runner.templating import render
from runner.tools.base import ToolCall

__all__ = ["LlmLog", "ModelParams", "StepOutcome", "ask_models", "run_llm_step", "run_tool_step", "validate_output"]


@dataclass(slots=True)
class StepOutcome:
    """What a step produced and the decision record that explains it."""

    output: Any
    considered: list[str]
    chosen: str
    why: str
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1
    llm_calls: int = 0
    cost_usd: Decimal = Decimal(0)
    input_hash_source: Any = None


def _render(value: Any, context: dict[str, Any], what: str) -> Any:
    try:
        return render(value, context)
    except TemplateError as exc:
        raise StepFailed("validation", f"{what}: {exc}", action="escalate") from exc


def validate_output(step: Step, output: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the output against the step's JSON schema and CEL rules; return the verdicts.

    Raises StepFailed(category='validation') on the first rejection, with every verdict so far.
    """
    verdicts: list[dict[str, Any]] = []
    if step.output_schema is not None:
        errors = sorted(validator_for(step.output_schema).iter_errors(output), key=str)
        if errors:
            first = errors[0]
            path = "/".join(str(p) for p in first.absolute_path) or "(root)"
            verdicts.append({"check": "output_schema", "ok": False, "message": f"{path}: {first.message}"})
            raise StepFailed("validation", f"output does not match output_schema at {path}: {first.message}",
                             details={"verdicts": verdicts})
        verdicts.append({"check": "output_schema", "ok": True})
    if step.rules:
        data = {**context, "output": output}
        for src in step.rules:
            try:
                ok = compile_rule(src).evaluate(data)
            except RuleError as exc:
                verdicts.append({"check": "rule", "rule": src, "ok": False, "message": str(exc)})
                raise StepFailed("validation", f"rule {src!r} could not be evaluated: {exc}",
                                 details={"verdicts": verdicts}) from exc
            verdicts.append({"check": "rule", "rule": src, "ok": ok})
            if not ok:
                raise StepFailed("validation", f"rule {src!r} rejected the output", details={"verdicts": verdicts})
    return verdicts


def run_tool_step(toolbox: Toolbox, run_id: str, item_index: int, step: Step, context: dict[str, Any],
                  idempotency_key: str | None, start_attempt: int = 1) -> StepOutcome:
    """Call the step's tool (with its retry policy) and validate what it returns."""
    assert step.tool is not None
    tool = toolbox.tool(step.tool)
    args = _render(step.args, context, "args")
    call = ToolCall(tenant_id=toolbox.tenant_id, run_id=run_id, item_index=item_index, step_id=step.id,
                    args=args, idempotency_key=idempotency_key)
    attempts: list[dict[str, Any]] = []
    if hasattr(tool, "call_detailed"):
        result = tool.call_detailed(call, start_attempt=start_attempt)
        output = result.value
        attempts = [{"check": "attempt", **a.to_dict()} for a in result.attempts]
    else:
        output = tool.call(call)
    verdicts = validate_output(step, output, context)
    why = f"spec step {step.id!r} calls tool {step.tool}"
    if len(attempts) > 1:
        why += f"; succeeded on attempt {len(attempts) + start_attempt - 1} after retries"
    return StepOutcome(output=output, considered=[step.tool], chosen=step.tool, why=why,
                       verdicts=attempts + verdicts, attempts=max(1, len(attempts)), input_hash_source=args)


def _parse_model_output(step: Step, text: str) -> Any:
    if step.output_schema is None:
        return {"text": text}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StepFailed("validation", f"model output is not JSON: {exc.msg} at {exc.pos}") from exc


@dataclass(slots=True)
class LlmLog:
    """What an llm step's model calls did, for the decision event."""

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
        toolbox.settle_llm(hold, response.usage.input_tokens, response.usage.output_tokens, response.cost_usd)
        log.cost += response.cost_usd
        log.usage.append({"check": "model_call", "model": alias, "provider": response.provider, "ok": True,
                          "input_tokens": response.usage.input_tokens,
                          "output_tokens": response.usage.output_tokens, "cost_usd": str(response.cost_usd)})
        return response.text, alias, len(errors)
    raise StepFailed("dependency", "every model failed: " + "; ".join(errors), action="escalate",
                     details={"considered": chain, "verdicts": log.verdicts, "llm_calls": log.calls})


def run_llm_step(toolbox: Toolbox, step: Step, context: dict[str, Any]) -> StepOutcome:
    """Ask the step's model (its fallbacks on dependency failures) and validate the answer.

    An invalid answer is retried ``on_invalid.retry`` times with the violation fed back to the
    model; then ``on_invalid.then`` decides: ``fallback`` tries the next model of the chain the
    same way, ``escalate`` or ``fail`` stop the item.
    """
    assert step.llm is not None
    llm = step.llm
    prompt = str(_render(llm.prompt, context, "prompt"))
    system = _render(llm.system, context, "system") if llm.system else None
    chain = [llm.model, *llm.fallbacks]
    params = ModelParams(llm.max_tokens, llm.temperature, dict(llm.sandbox or {}), step.output_schema)
    log = LlmLog()
    tries_per_model = 1 + step.on_invalid.retry
    models_to_try = len(chain) if step.on_invalid.then == "fallback" else 1
    attempt = 0
    last_error: StepFailed | None = None
    for first in range(models_to_try):
        feedback: str | None = None
        for _ in range(tries_per_model):
            attempt += 1
            messages = [Message("system", str(system))] if system else []
            messages.append(Message("user", prompt))
            if feedback:
                messages.append(Message("user", f"Your previous answer was rejected: {feedback}. Answer again."))
            text, chosen, fallbacks = ask_models(toolbox, params, chain[first:], messages, attempt, log)
            try:
                output = _parse_model_output(step, text)
                verdicts = validate_output(step, output, context)
            except StepFailed as exc:
                last_error = exc
                log.verdicts.extend(exc.details.get("verdicts", [{"check": "parse", "ok": False,
                                                                  "message": exc.reason}]))
                feedback = exc.reason
                continue
            why = f"model {chosen!r} answered"
            if fallbacks:
                why += f" after {fallbacks} fallback(s)"
            if attempt > 1:
                why += f"; valid on attempt {attempt}"
            return StepOutcome(output=output, considered=chain, chosen=chosen, why=why,
                               verdicts=log.verdicts + log.usage + verdicts, attempts=attempt, llm_calls=log.calls,
                               cost_usd=log.cost, input_hash_source=prompt)
    assert last_error is not None
    then = step.on_invalid.then
    raise StepFailed("validation", f"{last_error.reason} (after {attempt} attempt(s))",
                     action="fail" if then == "fail" else "escalate", attempts=attempt,
                     details={"verdicts": log.verdicts + log.usage, "llm_calls": log.calls})
