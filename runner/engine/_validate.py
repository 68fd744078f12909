"""Output validation: the step's JSON schema, then its CEL rules, each recorded as a verdict."""

from __future__ import annotations

from typing import Any

from runner.errors import RuleError, StepFailed
from runner.jsonschemas import validator_for
from runner.rules import RuleInput, compile_rule, rule_set
from runner.spec import Step

__all__ = ["validate_output"]


def validate_output(step: Step, output: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the output against the step's JSON schema and CEL rules; return the verdicts.

    Raises StepFailed(category='validation') on the first rejection, with every verdict so far.
    """
    verdicts: list[dict[str, Any]] = []
    if step.output_schema is not None:
        validator = validator_for(step.output_schema)  # compiled once per schema (linear-time patterns)
        errors = [] if validator.is_valid(output) else sorted(validator.iter_errors(output), key=str)
        if errors:
            first = errors[0]
            path = "/".join(str(p) for p in first.absolute_path) or "(root)"
            verdicts.append({"check": "output_schema", "ok": False, "message": f"{path}: {first.message}"})
            raise StepFailed("validation", f"output does not match output_schema at {path}: {first.message}",
                             details={"verdicts": verdicts})
        verdicts.append({"check": "output_schema", "ok": True})
    if step.rules:
        data = RuleInput({**context, "output": output})  # converted lazily, once for all the step's rules
        if rule_set(tuple(step.rules)).all_true(data):  # the common case: one cel call for all of them
            verdicts += [{"check": "rule", "rule": src, "ok": True} for src in step.rules]
            return verdicts
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
