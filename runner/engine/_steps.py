"""Executing one step: render its arguments, call the tool or model, validate the output."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonschema

from runner.engine._registry import resolve_model, resolve_tool
from runner.errors import RuleError, StepFailed, TemplateError
from runner.providers.base import Message, ModelRequest
from runner.rules import compile_rule
from runner.spec import Step
from runner.templating import render
from runner.tools.base import ToolCall

__all__ = ["StepOutcome", "run_llm_step", "run_tool_step", "validate_output"]


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
        errors = sorted(jsonschema.Draft202012Validator(step.output_schema).iter_errors(output), key=str)
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


def run_tool_step(tenant_id: str, run_id: str, item_index: int, step: Step, context: dict[str, Any],
                  idempotency_key: str | None) -> StepOutcome:
    """Call the step's tool once with rendered args and validate what it returns."""
    assert step.tool is not None
    tool = resolve_tool(tenant_id, step.tool)
    args = _render(step.args, context, "args")
    output = tool.call(ToolCall(tenant_id=tenant_id, run_id=run_id, item_index=item_index, step_id=step.id,
                                args=args, idempotency_key=idempotency_key))
    verdicts = validate_output(step, output, context)
    return StepOutcome(output=output, considered=[step.tool], chosen=step.tool,
                       why=f"spec step {step.id!r} calls tool {step.tool}", verdicts=verdicts,
                       input_hash_source=args)


def _parse_model_output(step: Step, text: str) -> Any:
    if step.output_schema is None:
        return {"text": text}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StepFailed("validation", f"model output is not JSON: {exc.msg} at {exc.pos}") from exc


def run_llm_step(tenant_id: str, step: Step, context: dict[str, Any]) -> StepOutcome:
    """Ask the step's model (then its fallbacks on dependency failures); validate, retrying with feedback."""
    assert step.llm is not None
    llm = step.llm
    prompt = _render(llm.prompt, context, "prompt")
    system = _render(llm.system, context, "system") if llm.system else None
    chain = [llm.model, *llm.fallbacks]
    verdict_log: list[dict[str, Any]] = []
    llm_calls = 0
    cost = Decimal(0)
    feedback: str | None = None
    max_attempts = 1 + step.on_invalid.retry
    last_error: StepFailed | None = None
    for attempt in range(1, max_attempts + 1):
        messages = [Message("system", system)] if system else []
        messages.append(Message("user", str(prompt)))
        if feedback:
            messages.append(Message("user", f"Your previous answer was rejected: {feedback}. Answer again."))
        response = None
        dependency_errors: list[str] = []
        for alias in chain:
            started = time.perf_counter()
            try:
                provider = resolve_model(tenant_id, alias)
                llm_calls += 1
                response = provider.complete(ModelRequest(
                    model=alias, messages=messages, max_tokens=llm.max_tokens, temperature=llm.temperature,
                    output_schema=step.output_schema, options=dict(llm.sandbox or {}), attempt=attempt))
                cost += response.cost_usd
                chosen = alias
                break
            except StepFailed as exc:
                if exc.category != "dependency":
                    raise
                dependency_errors.append(f"{alias}: {exc.reason} ({(time.perf_counter() - started) * 1000:.0f} ms)")
        if response is None:
            raise StepFailed("dependency", "every model failed: " + "; ".join(dependency_errors),
                             action="escalate", details={"considered": chain})
        try:
            output = _parse_model_output(step, response.text)
            verdicts = validate_output(step, output, context)
        except StepFailed as exc:
            last_error = exc
            verdict_log.extend(exc.details.get("verdicts", [{"check": "parse", "ok": False, "message": exc.reason}]))
            feedback = exc.reason
            continue
        why = f"model {chosen!r} answered"
        if dependency_errors:
            why += f" after {len(dependency_errors)} fallback(s)"
        if attempt > 1:
            why += f"; valid on attempt {attempt} of {max_attempts}"
        return StepOutcome(output=output, considered=chain, chosen=chosen, why=why,
                           verdicts=verdict_log + verdicts, attempts=attempt, llm_calls=llm_calls, cost_usd=cost,
                           input_hash_source=prompt)
    assert last_error is not None
    then = step.on_invalid.then
    raise StepFailed("validation", f"{last_error.reason} (after {max_attempts} attempt(s))",
                     action="fail" if then == "fail" else "escalate", attempts=max_attempts,
                     details={"verdicts": verdict_log, "llm_calls": llm_calls})
