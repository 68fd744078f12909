"""The changes that would most improve a rehearsed agent, each with the evidence the rehearsal measured.

One function per kind of advice, each returning a change (or None when the evidence does not call for
one): answers a step accepted although the rehearsal knew them wrong, failures grouped by step, category
and kind of reason (an unknown outcome of a side effect, invalid answers, an unavailable model or API, a
missing secret, a static credential, a field missing after an API changed shape, an autonomy bound), and a
chain of steps too long for its SLO. :func:`changes` keeps the three with the most impact.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner.rehearsal.plan import STANDINS
from runner.rehearsal.wording import pct, reason_kind
from runner.spec import AgentSpec, Step

if TYPE_CHECKING:
    from runner.rehearsal.report import FigureBuilder

__all__ = ["changes"]

# The rule that would have rejected each kind of known-wrong text answer.
_RULE_FOR = {"leak": "!output.text.contains('password')", "rambling": "size(output.text) < 2000",
             "empty": "size(output.text) > 0"}
# Ties in impact go to the change that comes first here.
_ORDER = {c: i for i, c in enumerate((
    "missing_secret", "not_idempotent", "accepted_wrong_answers", "retries_exhausted", "static_credential",
    "validation_exhausted", "schema_drift_late", "model_unavailable", "truncated", "refused",
    "schema_drift_caught", "autonomy_bound", "dependency", "long_chain"))}

Change = dict[str, Any]


def _change(impact: int, change: str, evidence: str, code: str) -> Change:
    return {"code": code, "change": change, "evidence": evidence, "impact": impact}


def changes(b: FigureBuilder, figures: dict[str, Any]) -> list[Change]:
    """The (at most) three changes with the most impact: items they would have saved, then :data:`_ORDER`."""
    out = _wrong_answers(b)
    for (step_id, category, _kind), events in sorted(_failure_groups(b).items()):
        if step_id not in b.steps:
            continue
        reasons = " ".join(b.clean(e.why) for e in events)
        found = _for_failures(b, b.steps[step_id], category, len(events), reasons)
        if found is not None:
            out.append(found)
    chain = _long_chain(b.spec, figures)
    if chain is not None:
        out.append(chain)
    out.sort(key=lambda c: (-c["impact"], _ORDER.get(c["code"], 99), c["change"]))
    return out[:3]


def _wrong_answers(b: FigureBuilder) -> list[Change]:
    """A rule or an output schema for each step that accepted answers the rehearsal knew were wrong."""
    wrong_by_step: dict[str, Counter[str]] = defaultdict(Counter)
    for (_, _, step_id), kind in b.wrong.items():
        wrong_by_step[step_id][kind] += 1
    out = []
    for step_id, kinds in wrong_by_step.items():
        step = b.steps[step_id]
        total = sum(kinds.values())
        shown = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
        rules = [_RULE_FOR[k] for k in sorted(kinds) if k in _RULE_FOR and _RULE_FOR[k] not in step.rules]
        if any(k in ("off_schema", "prose") for k in kinds) or (step.kind != "llm" and not rules):
            change = f"give step `{step_id}` an output_schema that rejects malformed answers"
        else:
            change = f"add rules to step `{step_id}`: " + ", ".join(f"`{r}`" for r in rules)
        out.append(_change(total, change, f"step `{step_id}` accepted {total} answer(s) the rehearsal knew were "
                                          f"wrong ({shown})", "accepted_wrong_answers"))
    return out


def _failure_groups(b: FigureBuilder) -> dict[tuple[str, str, str], list[Any]]:
    """Failed steps by (step, failure category, kind of reason)."""
    failures: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for (_, _, step_id), event in b.events.items():
        if event.kind == "step.failed":
            failures[(step_id, event.failure_category or "internal", reason_kind(b.clean(event.why)))].append(event)
    return failures


def _for_failures(b: FigureBuilder, step: Step, category: str, n: int, reasons: str) -> Change | None:
    """The change for ``n`` failures of ``step`` in ``category`` (``reasons``: their reasons, joined)."""
    if "unknown_outcome" in reasons or "outcome unknown" in reasons:
        return _not_idempotent(step, n)
    advise = _BY_CATEGORY.get(category)
    return None if advise is None else advise(b, step, n, reasons)


def _validation(b: FigureBuilder, step: Step, n: int, reasons: str) -> Change | None:
    if step.kind in ("llm", "agent"):
        return _invalid_answers(step, n, reasons)
    return _schema_drift_late(b, step, n, reasons) if "not found" in reasons else None


def _dependency(b: FigureBuilder, step: Step, n: int, reasons: str) -> Change | None:
    if step.kind in ("llm", "agent"):
        return _model_unavailable(step, n)
    return None if step.tool is None else _tool_dependency(b, step, step.tool, n, reasons)


def _auth(_b: FigureBuilder, step: Step, n: int, reasons: str) -> Change | None:
    if "is not available" in reasons:
        return _missing_secret(step, n, reasons)
    return None if step.tool is None else _static_credential(step.tool, n)


def _autonomy_bound(_b: FigureBuilder, step: Step, n: int, _reasons: str) -> Change:
    return _change(n, f"raise the autonomy bound step `{step.id}` hit, or cut the retries that use it up",
                   f"{n} item(s) stopped at an autonomy bound at step `{step.id}`", "autonomy_bound")


def _not_idempotent(step: Step, n: int) -> Change:
    tool = step.tool or "its tool"
    return _change(n, f"make tool `{tool}` idempotent: send an idempotency key the API honours (`idempotent: true`)",
                   f"tool `{tool}` is not idempotent and {n} item(s) escalated with an unknown outcome at step "
                   f"`{step.id}`", "not_idempotent")


def _invalid_answers(step: Step, n: int, reasons: str) -> Change:
    """A model step whose answers failed validation: cut off, refused, or invalid after its retries."""
    if "before finishing" in reasons:
        return _change(n, f"raise `max_tokens` of step `{step.id}` (or shorten what it asks for)",
                       f"step `{step.id}` was cut off by max_tokens in {n} item(s)", "truncated")
    if "refused" in reasons:
        return _change(n, f"review the prompt of step `{step.id}`: refusals go to a human by design",
                       f"the model refused step `{step.id}` in {n} item(s)", "refused")
    retry = step.on_invalid.retry
    return _change(n, f"let step `{step.id}` retry invalid answers more (`on_invalid.retry: {min(5, retry + 2)}`, "
                      f"now {retry}) or add a fallback model",
                   f"step `{step.id}` failed validation in {n} item(s) after {retry} "
                   f"retr{'y' if retry == 1 else 'ies'}", "validation_exhausted")


def _model_unavailable(step: Step, n: int) -> Change:
    call = step.llm or step.agent
    assert call is not None
    return _change(n, f"give step `{step.id}` a fallback model (`fallbacks:`), or raise `retry.max_attempts` of "
                      f"model `{call.model}`", f"every model of step `{step.id}` failed in {n} item(s) (429s, 503s)",
                   "model_unavailable")


def _tool_dependency(b: FigureBuilder, step: Step, tool: str, n: int, reasons: str) -> Change | None:
    """A tool step that failed on its API: retries exhausted, a changed response shape, or else."""
    if tool in STANDINS:
        return None  # a built-in's retry policy is not the tenant's to change: nothing to advise
    definition = b.o.source.tool_definition(tool)
    attempts = definition.retry.max_attempts if definition is not None else 0
    if "gave up after" in reasons:
        return _change(n, f"raise `retry.max_attempts` of tool `{tool}` from {attempts} to "
                          f"{min(10, max(5, attempts + 2))}",
                       f"step `{step.id}` gave up after {attempts} attempts in {n} item(s) (429 storms, 503 bursts)",
                       "retries_exhausted")
    if "schema" in reasons or "drift" in reasons or "does not match" in reasons:
        return _change(n, f"tool `{tool}`'s API changed shape: track the new field name, or let step `{step.id}` "
                          "skip such items (`on_dependency_failure: skip_item`) until it is fixed",
                       f"{n} answer(s) of `{tool}` failed its response_schema after a field was renamed",
                       "schema_drift_caught")
    return _change(n, f"set `on_dependency_failure` of step `{step.id}` and check tool `{tool}`'s retry policy",
                   f"step `{step.id}` failed on its dependency in {n} item(s)", "dependency")


def _missing_secret(step: Step, n: int, reasons: str) -> Change:
    missing = sorted(set(re.findall(r"secret '([a-z][a-z0-9_-]*)' is not available", reasons)))
    return _change(n, "create the secret(s) " + ", ".join(f"`{m}`" for m in missing) + " in the tenant "
                      "(POST /v1/secrets)",
                   f"step `{step.id}` could not authenticate in {n} item(s): the secret is not set for this tenant",
                   "missing_secret")


def _static_credential(tool: str, n: int) -> Change:
    return _change(n, f"authenticate tool `{tool}` with `oauth2_client_credentials`: a 401 then fetches a new "
                      "token instead of escalating",
                   f"tool `{tool}` answered 401 (an expired token) and {n} item(s) escalated", "static_credential")


def _schema_drift_late(b: FigureBuilder, step: Step, n: int, reasons: str) -> Change | None:
    """A step that read a field missing from an earlier tool step's output (the API renamed it)."""
    source = _source_step(b.spec, step.id, reasons)
    drifted = b.steps[source].tool if source in b.steps else None
    if drifted is None:
        return None
    return _change(n, f"declare a `response_schema` on tool `{drifted}` requiring the fields later steps read",
                   f"step `{step.id}` failed in {n} item(s) on a field missing from `{source}`'s output (the API "
                   "renamed it); a response_schema would reject it at the tool, with a clear reason",
                   "schema_drift_late")


def _source_step(spec: AgentSpec, failed: str, reasons: str) -> str:
    for step in spec.steps:
        if step.id == failed:
            break
        if f"steps.{step.id}." in reasons:
            return step.id
    return "?"


def _long_chain(spec: AgentSpec, figures: dict[str, Any]) -> Change | None:
    """More than 5 steps whose product of success rates misses the SLO."""
    projection = figures["end_to_end"]["projected"]
    if len(spec.steps) <= 5 or projection is None or projection >= spec.objective.slo.success_rate:
        return None
    lost = figures["end_to_end"]["tries"] - round(projection * figures["end_to_end"]["tries"])
    return _change(lost, "split the agent into agents of at most 5 steps",
                   f"{len(spec.steps)} steps project to {pct(projection)} end to end", "long_chain")


_BY_CATEGORY: dict[str, Callable[[FigureBuilder, Step, int, str], Change | None]] = {
    "validation": _validation, "dependency": _dependency, "auth": _auth, "budget": _autonomy_bound}
