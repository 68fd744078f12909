"""The rehearsal report: figures, verdict, the three changes that would most improve the agent, a table.

Every figure under ``figures`` (and the verdict and changes) is a function of the seed: the same seed gives
the same figures. Wall-clock measurements (latencies, the time to recover from the kill, durations) are
under ``timings`` only.

- **Tries**: each item of each repetition is one try. A try succeeds when its item completed *and* no step
  of it accepted an answer the rehearsal knew was wrong (:data:`~runner.rehearsal.faults.KNOWN_WRONG`):
  a silent wrong answer is a failure the spec did not catch.
- **Per step**: tries that reached the step, how many it passed (a known-wrong answer accepted counts as
  not passed), retries by failure category (counted at the upstream: a request that followed a failed
  answer of the same call; ``validation`` when the model was asked again after a rejected answer, ``state``
  for the call re-sent after the kill), and requests.
- **Projection**: the product of the measured per-step success rates, against the measured end-to-end
  success and the spec's SLO. **pass^k**: the share of items that succeed in k tries out of the K
  repetitions (the unbiased estimator mean C(c, k) / C(K, k), as published with tau-bench).
- **Side effects** are counted at the recording upstream: effects carried out per action, duplicates
  (a second effect of one action: must be 0) and requests that re-sent an idempotency key.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.rehearsal.faults import KNOWN_WRONG
from runner.rehearsal.orchestrate import Observed
from runner.rehearsal.plan import STANDINS
from runner.rehearsal.upstream import Served
from runner.spec import AgentSpec, Step
from tenants.rehearsals.models import PROFILE_RANKS
from tenants.rehearsals.service import Headline

__all__ = ["build_report", "headline", "profile_label", "render_table"]

_TOOL_FAILURES = frozenset({"rate_limit", "unavailable", "html", "reset", "reset_after_apply", "truncated",
                            "timeout", "token_expiry", "bad_credential"})
_MODEL_REJECTED = KNOWN_WRONG | {"refusal", "truncated", "bad_tool_args"}
_RULE_FOR = {"leak": "!output.text.contains('password')", "rambling": "size(output.text) < 2000",
             "empty": "size(output.text) > 0"}
_KEY = re.compile(r"mw-[a-z]+_[0-9a-f]+-\d+-\d+(?:\.\d+\.\d+)?")
_RUN = re.compile(r"\brun_[0-9a-f]{24}\b")


def profile_label(profile: Any) -> str:
    """A built-in profile's name, or ``custom:<name>`` (what the gate ranks)."""
    from runner.rehearsal.profile import BUILTIN

    return profile.name if BUILTIN.get(profile.name) == profile else f"custom:{profile.name}"


@dataclass(frozen=True, slots=True)
class _Try:
    rep: int
    item: int
    state: str
    reason: str | None
    category: str | None
    steps_used: int
    llm_calls: int


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


_UPSTREAM = re.compile(r"(?:https?://)?127\.0\.0\.1:(\d+)")


def _clean(text: str | None, labels: dict[int, str]) -> str:
    """A reason without run ids, idempotency keys and the upstream's ports (each shown as the host it stands
    for), so equal reasons group and figures stay the same for the same seed."""
    text = _KEY.sub("<key>", text or "")
    text = _UPSTREAM.sub(lambda m: labels.get(int(m.group(1)), "upstream"), text)
    return _RUN.sub("<run>", text)[:300]


_KINDS = (("unknown_outcome", "unknown outcome of a side effect"),
          ("outcome unknown", "unknown outcome of a side effect"),
          ("refused", "the model refused"), ("before finishing", "cut off by max_tokens"),
          ("gave up after", "gave up after its retries"), ("not found in", "a field it reads is missing"),
          ("autonomy bound", "an autonomy bound"), ("401", "401 from the API"), ("403", "403 from the API"),
          ("does not match", "the answer broke a schema"), ("schema", "the answer broke a schema"),
          ("rule", "the answer broke a rule"), ("not JSON", "the answer was not JSON"),
          ("got text/html", "an HTML page where JSON was expected"), ("timeout", "timed out"),
          ("reset by peer", "connection reset"), ("mid-body", "a truncated answer"), ("circuit", "circuit open"))


def _reason_kind(reason: str) -> str:
    for needle, kind in _KINDS:
        if needle in reason:
            return kind
    return "other"


def _pass_hat(successes: list[int], trials: int, k: int) -> float | None:
    if not successes or k > trials:
        return None
    return sum(math.comb(c, k) / math.comb(trials, k) for c in successes) / len(successes)


def _retry_category(previous: Served, current: Served, step: Step | None) -> str | None:
    """The category of the retry ``current`` is, after ``previous`` of the same call (None: not a retry)."""
    if previous.fault == "hold":
        return "state"
    if previous.fault in ("token_expiry", "bad_credential"):
        return "auth"
    if current.target.startswith("tool:"):
        return "dependency" if previous.fault in _TOOL_FAILURES else None
    if previous.fault in ("unavailable", "rate_limit"):
        return "dependency"
    if step is not None and step.agent is not None and previous.fault not in _MODEL_REJECTED:
        return None  # the agent's next turn, not a retry
    return "validation"


class _Builder:
    def __init__(self, observed: Observed) -> None:
        self.o = observed
        self.spec: AgentSpec = observed.source.spec
        self.steps = {s.id: s for s in self.spec.steps}
        self.batch = observed.plan.runs[0]["items"] is not None if observed.plan.runs else True
        self.run_of = {r.run_id: r for r in observed.runs}
        self.tries = self._tries()
        self.events = self._events()
        self.served = [s for s in observed.served if s.rep > 0]
        self.wrong = self._accepted_wrong()

    def clean(self, text: str | None) -> str:
        return _clean(text, self.o.port_labels)

    # ---- facts ------------------------------------------------------------------------------------
    def _tries(self) -> list[_Try]:
        out = []
        for row in self.o.items:
            run = self.run_of.get(row.run_id)
            if run is None:
                continue
            out.append(_Try(run.rep, run.offset + row.item_index, row.state, row.reason, row.failure_category,
                            row.steps_used, row.llm_calls))
        return sorted(out, key=lambda t: (t.rep, t.item))

    def _events(self) -> dict[tuple[int, int, str], Any]:
        out = {}
        for e in self.o.step_events:
            run = self.run_of.get(e.run_id)
            if run is not None and e.step_id:
                out[(run.rep, run.offset + (e.item_index or 0), e.step_id)] = e
        return out

    def _accepted_wrong(self) -> dict[tuple[int, int, str], str]:
        """(rep, item, step) whose step succeeded on a known-wrong final answer -> the kind of wrong answer."""
        last: dict[tuple[int, int, str], Served] = {}
        for s in self.served:
            if s.target.startswith("model:"):
                last[(s.rep, s.item, s.step)] = s
        out = {}
        for key, served in last.items():
            event = self.events.get(key)
            if event is not None and event.kind == "step.succeeded" and served.fault in KNOWN_WRONG:
                out[key] = served.fault
        return out

    # ---- figures ----------------------------------------------------------------------------------
    def try_ok(self, t: _Try) -> bool:
        return t.state == "done" and not any(k[:2] == (t.rep, t.item) for k in self.wrong)

    def end_to_end(self) -> dict[str, Any]:
        ok = sum(1 for t in self.tries if self.try_ok(t))
        measured = ok / len(self.tries) if self.tries else None
        per_step = [s["success"] for s in self.step_rows() if s["success"] is not None]
        projected = math.prod(per_step) if per_step else None
        slo = self.spec.objective.slo.success_rate
        return {"tries": len(self.tries), "succeeded": ok, "measured": _round(measured), "projected": _round(projected),
                "slo": slo, "meets_slo": measured is not None and measured >= slo - 1e-12,
                "silently_wrong": len({k[:2] for k in self.wrong})}

    def pass_k(self) -> dict[str, Any]:
        repeat = self.o.options.repeat
        per_item: dict[int, int] = defaultdict(int)
        for t in self.tries:
            per_item[t.item] += int(self.try_ok(t))
        counts = [per_item.get(i, 0) for i in range(self.o.options.items)]
        target = self.spec.objective.slo.pass_k
        k = target.k if target is not None else repeat
        return {"k": k, "value": _round(_pass_hat(counts, repeat, k)), "min": target.min if target else None,
                "items_all_tries": sum(1 for c in counts if c == repeat), "items": len(counts),
                "curve": {str(j): _round(_pass_hat(counts, repeat, j)) for j in range(1, repeat + 1)}}

    def step_rows(self) -> list[dict[str, Any]]:
        retries: dict[str, Counter[str]] = defaultdict(Counter)
        requests: Counter[str] = Counter()
        by_call: dict[tuple[int, int, str, str], list[Served]] = defaultdict(list)
        for s in self.served:
            if s.target.startswith(("tool:", "model:")):
                by_call[(s.rep, s.item, s.step, s.target)].append(s)
                requests[s.step] += 1
        for calls in by_call.values():
            calls.sort(key=lambda s: s.n)
            for previous, current in itertools.pairwise(calls):
                category = _retry_category(previous, current, self.steps.get(current.step))
                if category is not None:
                    retries[current.step][category] += 1
        rows = []
        for step in self.spec.steps:
            events = [e for (_, _, sid), e in self.events.items() if sid == step.id]
            wrong = sum(1 for (_, _, sid) in self.wrong if sid == step.id)
            passed = sum(1 for e in events if e.kind == "step.succeeded") - wrong
            failed: Counter[str] = Counter(e.failure_category or "internal" for e in events if e.kind == "step.failed")
            rows.append({"id": step.id, "kind": step.kind, "reached": len(events), "passed": passed,
                         "accepted_wrong": wrong, "failed": dict(sorted(failed.items())),
                         "success": _round(passed / len(events)) if events else None,
                         "retries": dict(sorted(retries[step.id].items())), "requests": requests[step.id]})
        return rows

    def escalations(self) -> dict[str, Any]:
        groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for t in self.tries:
            if t.state in ("escalated", "failed", "skipped"):
                step = self._failed_step(t)
                reason = self.clean(t.reason)
                groups[(step, t.category or "internal", _reason_kind(reason))].append(reason)
        by_reason: list[dict[str, Any]] = [
            {"step": step, "category": cat, "why": why, "count": len(reasons),
             "example": sorted(Counter(reasons).most_common(), key=lambda rc: (-rc[1], rc[0]))[0][0]}
            for (step, cat, why), reasons in groups.items()]
        by_reason.sort(key=lambda g: (-int(g["count"]), str(g["step"]), str(g["category"]), str(g["why"])))
        states = Counter(t.state for t in self.tries if t.state != "done")
        return {"items": sum(states.values()), "by_state": dict(sorted(states.items())), "by_reason": by_reason}

    def _failed_step(self, t: _Try) -> str:
        for step in self.spec.steps:
            event = self.events.get((t.rep, t.item, step.id))
            if event is not None and event.kind == "step.failed":
                return step.id
        return "?"

    def humans(self) -> dict[str, Any]:
        # an approved request becomes "consumed" once its step runs; the scripted human signs its decisions
        decided = Counter("approved" if a.state in ("approved", "consumed") and a.decided_by else a.state
                          for a in self.o.approvals)
        unknown = sum(1 for t in self.tries if "unknown_outcome" in (t.reason or "")
                      or "outcome unknown" in (t.reason or ""))
        return {"escalated_items": sum(1 for t in self.tries if t.state == "escalated"),
                "approvals": len(self.o.approvals), "approved": decided.get("approved", 0),
                "rejected": decided.get("rejected", 0), "unknown_outcomes": unknown}

    def side_effects(self) -> dict[str, Any]:
        effects: Counter[str] = Counter()
        by_tool: dict[str, dict[str, int]] = defaultdict(lambda: {"requests": 0, "effects": 0, "resent_keys": 0})
        for s in self.served:
            if not s.side_effect:
                continue
            tool = s.target.removeprefix("tool:")
            by_tool[tool]["requests"] += 1
            by_tool[tool]["effects"] += int(s.applied)
            by_tool[tool]["resent_keys"] += int(s.resent)
            if s.applied and s.action is not None:
                effects[s.action] += 1
        duplicates = sum(n - 1 for n in effects.values() if n > 1)
        return {"effects": sum(effects.values()), "actions": len(effects), "duplicates": duplicates,
                "duplicated_actions": sorted(a for a, n in effects.items() if n > 1)[:20],
                "resent_keys": sum(int(s.resent) for s in self.served if s.side_effect),
                "by_tool": {k: by_tool[k] for k in sorted(by_tool)},
                "ledger_unknown": sum(1 for e in self.o.side_effects if e.state == "unknown")}

    def platform(self) -> dict[str, Any]:
        p = self.o.platform
        kill = None
        if p.kill is not None:
            kill = {"repetition": p.kill.rep, "item": p.kill.item, "step": p.kill.step, "in_flight": p.kill.target,
                    "killed": p.killed_at is not None, "progressed_again": p.recovery_s is not None}
        profile = self.o.options.profile.platform
        return {"worker_kill": kill if profile.kill_worker else None, "queue": p.queue,
                "dropped_messages": p.dropped_messages, "worker_starts": p.worker_starts,
                "database_restart": None if p.db_restart is None else {k: v for k, v in p.db_restart.items()
                                                                        if k != "duration_s"},
                "planned": {"kill_worker": profile.kill_worker, "drop_queue": profile.drop_queue,
                            "slot": None if self.o.schedule.kill is None else {
                                "repetition": self.o.schedule.kill.rep, "from_item": self.o.schedule.kill.item_from,
                                "step": self.o.schedule.kill.step}}}

    def budget(self) -> dict[str, Any]:
        autonomy = self.spec.autonomy
        costs = [Decimal(str(r.cost_usd)) for r in self.o.states.values()]
        hits = Counter(self.clean(t.reason).split(" reached")[0].split(" exceeded")[0] for t in self.tries
                       if t.category == "budget")
        return {
            "cost_usd_total": _money(sum(costs, Decimal(0))),
            "cost_usd_max_run": _money(max(costs, default=Decimal(0))),
            "max_cost_usd": None if autonomy.max_cost_usd is None else str(autonomy.max_cost_usd),
            "steps_per_item_max": max((t.steps_used for t in self.tries), default=0), "max_steps": autonomy.max_steps,
            "llm_calls_per_item_max": max((t.llm_calls for t in self.tries), default=0),
            "max_llm_calls": autonomy.max_llm_calls, "max_duration_s": autonomy.max_duration_s,
            "llm_calls_total": sum(int(r.llm_calls) for r in self.o.states.values()),
            "bounds_hit": dict(sorted(hits.items())),
            "spent_from_real_budgets": "0 (the rehearsal space has budgets of its own)"}

    def faults(self) -> dict[str, dict[str, int]]:
        tools: Counter[str] = Counter()
        models: Counter[str] = Counter()
        for s in self.served:
            (tools if s.target.startswith("tool:") else models if s.target.startswith("model:") else Counter())[
                s.fault] += 1
        return {"tools": dict(sorted(tools.items())), "models": dict(sorted(models.items()))}

    def waits(self) -> dict[str, Any]:
        """Steps that released the worker to wait, and why: an open circuit breaker or a long Retry-After."""
        breaker = sum(1 for e in self.o.deferrals if "circuit" in (e.why or ""))
        open_fast = sum(1 for e in self.events.values() if e.kind == "step.failed" and "circuit" in (e.why or ""))
        return {"deferred": len(self.o.deferrals), "circuit_open": breaker, "failed_on_open_circuit": open_fast}

    def requests(self) -> dict[str, Any]:
        by_target = Counter(s.target for s in self.o.served)
        return {"total": len(self.o.served), "by_target": dict(sorted(by_target.items())),
                "unrouted": sum(1 for s in self.o.served if s.target == "unknown")}

    def egress(self) -> dict[str, Any]:
        refused = [e for e in self.o.egress if not e.get("allowed")]
        return {"hops": len(self.o.egress), "refused": len(refused),
                "refused_hosts": sorted({f"{e['host']}:{e['port']}" for e in refused}),
                "only_rehearsal_upstream": not refused}


# ---- changes ----------------------------------------------------------------------------------------------

def _changes(b: _Builder, figures: dict[str, Any]) -> list[dict[str, Any]]:  # noqa: PLR0912, PLR0915 - one rule a block
    spec = b.spec
    out: list[dict[str, Any]] = []

    def add(impact: int, change: str, evidence: str, code: str) -> None:
        out.append({"code": code, "change": change, "evidence": evidence, "impact": impact})

    wrong_by_step: dict[str, Counter[str]] = defaultdict(Counter)
    for (_, _, step_id), kind in b.wrong.items():
        wrong_by_step[step_id][kind] += 1
    for step_id, kinds in wrong_by_step.items():
        step = b.steps[step_id]
        total = sum(kinds.values())
        shown = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
        rules = [_RULE_FOR[k] for k in sorted(kinds) if k in _RULE_FOR and _RULE_FOR[k] not in step.rules]
        if any(k in ("off_schema", "prose") for k in kinds) or (step.kind != "llm" and not rules):
            change = f"give step `{step_id}` an output_schema that rejects malformed answers"
        else:
            change = f"add rules to step `{step_id}`: " + ", ".join(f"`{r}`" for r in rules)
        add(total, change, f"step `{step_id}` accepted {total} answer(s) the rehearsal knew were wrong ({shown})",
            "accepted_wrong_answers")
    failures: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for (_, _, step_id), event in b.events.items():
        if event.kind == "step.failed":
            failures[(step_id, event.failure_category or "internal", _reason_kind(b.clean(event.why)))].append(event)
    for (step_id, category, _kind), events in sorted(failures.items()):
        if step_id not in b.steps:
            continue
        step = b.steps[step_id]
        n = len(events)
        reasons = " ".join(b.clean(e.why) for e in events)
        if "unknown_outcome" in reasons or "outcome unknown" in reasons:
            tool = step.tool or "its tool"
            add(n, f"make tool `{tool}` idempotent: send an idempotency key the API honours (`idempotent: true`)",
                f"tool `{tool}` is not idempotent and {n} item(s) escalated with an unknown outcome at step "
                f"`{step_id}`", "not_idempotent")
        elif category == "validation" and step.kind in ("llm", "agent"):
            if "before finishing" in reasons:
                add(n, f"raise `max_tokens` of step `{step_id}` (or shorten what it asks for)",
                    f"step `{step_id}` was cut off by max_tokens in {n} item(s)", "truncated")
            elif "refused" in reasons:
                add(n, f"review the prompt of step `{step_id}`: refusals go to a human by design",
                    f"the model refused step `{step_id}` in {n} item(s)", "refused")
            else:
                retry = step.on_invalid.retry
                add(n, f"let step `{step_id}` retry invalid answers more (`on_invalid.retry: {min(5, retry + 2)}`, "
                       f"now {retry}) or add a fallback model",
                    f"step `{step_id}` failed validation in {n} item(s) after {retry} "
                    f"retr{'y' if retry == 1 else 'ies'}",
                    "validation_exhausted")
        elif category == "dependency" and step.kind in ("llm", "agent"):
            call = step.llm or step.agent
            assert call is not None
            add(n, f"give step `{step_id}` a fallback model (`fallbacks:`), or raise `retry.max_attempts` of model "
                   f"`{call.model}`", f"every model of step `{step_id}` failed in {n} item(s) (429s, 503s)",
                "model_unavailable")
        elif category == "dependency" and step.tool is not None:
            definition = b.o.source.tool_definition(step.tool)
            attempts = definition.retry.max_attempts if definition is not None else 0
            if step.tool in STANDINS:
                continue  # a built-in's retry policy is not the tenant's to change: nothing to advise
            if "gave up after" in reasons:
                add(n, f"raise `retry.max_attempts` of tool `{step.tool}` from {attempts} to "
                       f"{min(10, max(5, attempts + 2))}",
                    f"step `{step_id}` gave up after {attempts} attempts in {n} item(s) (429 storms, 503 bursts)",
                    "retries_exhausted")
            elif "schema" in reasons or "drift" in reasons or "does not match" in reasons:
                add(n, f"tool `{step.tool}`'s API changed shape: track the new field name, or let step `{step_id}` "
                       "skip such items (`on_dependency_failure: skip_item`) until it is fixed",
                    f"{n} answer(s) of `{step.tool}` failed its response_schema after a field was renamed",
                    "schema_drift_caught")
            else:
                add(n, f"set `on_dependency_failure` of step `{step_id}` and check tool `{step.tool}`'s retry policy",
                    f"step `{step_id}` failed on its dependency in {n} item(s)", "dependency")
        elif category == "auth" and "is not available" in reasons:
            missing = sorted(set(re.findall(r"secret '([a-z][a-z0-9_-]*)' is not available", reasons)))
            add(n, "create the secret(s) " + ", ".join(f"`{m}`" for m in missing) + " in the tenant (POST /v1/secrets)",
                f"step `{step_id}` could not authenticate in {n} item(s): the secret is not set for this tenant",
                "missing_secret")
        elif category == "auth" and step.tool is not None:
            add(n, f"authenticate tool `{step.tool}` with `oauth2_client_credentials`: a 401 then fetches a new token "
                   "instead of escalating", f"tool `{step.tool}` answered 401 (an expired token) and {n} item(s) "
                   "escalated", "static_credential")
        elif category == "validation" and "not found" in reasons:
            source = _source_step(spec, step_id, reasons)
            drifted = b.steps[source].tool if source in b.steps else None
            if drifted is not None:
                add(n, f"declare a `response_schema` on tool `{drifted}` requiring the fields later steps read",
                    f"step `{step_id}` failed in {n} item(s) on a field missing from `{source}`'s output (the API "
                    "renamed it); a response_schema would reject it at the tool, with a clear reason",
                    "schema_drift_late")
        elif category == "budget":
            add(n, f"raise the autonomy bound step `{step_id}` hit, or cut the retries that use it up",
                f"{n} item(s) stopped at an autonomy bound at step `{step_id}`", "autonomy_bound")
    projection = figures["end_to_end"]["projected"]
    if len(spec.steps) > 5 and projection is not None and projection < spec.objective.slo.success_rate:
        lost = figures["end_to_end"]["tries"] - round(projection * figures["end_to_end"]["tries"])
        add(lost, "split the agent into agents of at most 5 steps",
            f"{len(spec.steps)} steps project to {_pct(projection)} end to end", "long_chain")
    order = {c: i for i, c in enumerate((
        "missing_secret", "not_idempotent", "accepted_wrong_answers", "retries_exhausted", "static_credential",
        "validation_exhausted", "schema_drift_late", "model_unavailable", "truncated", "refused",
        "schema_drift_caught", "autonomy_bound", "dependency", "long_chain"))}
    out.sort(key=lambda c: (-c["impact"], order.get(c["code"], 99), c["change"]))
    return out[:3]


def _source_step(spec: AgentSpec, failed: str, reasons: str) -> str:
    for step in spec.steps:
        if step.id == failed:
            break
        if f"steps.{step.id}." in reasons:
            return step.id
    return "?"


# ---- the report -----------------------------------------------------------------------------------------

def _verdict(spec: AgentSpec, figures: dict[str, Any], repeat: int) -> dict[str, Any]:
    reasons: list[str] = []
    e2e = figures["end_to_end"]
    if e2e["measured"] is None or not e2e["meets_slo"]:
        reasons.append(f"measured end-to-end success {_pct(e2e['measured'])} is below the SLO {_pct(e2e['slo'])}")
    duplicates = figures["side_effects"]["duplicates"]
    if duplicates:
        reasons.append(f"{duplicates} side effect(s) happened twice (counted at the upstream)")
    target = spec.objective.slo.pass_k
    pk = figures["pass_k"]
    if target is not None:
        if target.k > repeat:
            reasons.append(f"objective.slo.pass_k.k is {target.k}: rehearse with --repeat {target.k} or more "
                           f"(this one repeated {repeat})")
        elif pk["value"] is None or pk["value"] < target.min - 1e-12:
            reasons.append(f"pass^{target.k} {_pct(pk['value'])} is below its target {_pct(target.min)}")
    passed = not reasons
    if passed:
        reasons.append(f"measured {_pct(e2e['measured'])} meets the SLO {_pct(e2e['slo'])}; 0 duplicate side effects"
                       + (f"; pass^{target.k} {_pct(pk['value'])} meets {_pct(target.min)}" if target else ""))
    return {"result": "pass" if passed else "fail", "reasons": reasons}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def build_report(observed: Observed) -> dict[str, Any]:
    """The report of an observed rehearsal (see the module docstring)."""
    b = _Builder(observed)
    source = observed.source
    figures: dict[str, Any] = {
        "end_to_end": b.end_to_end(), "pass_k": b.pass_k(), "steps": b.step_rows(), "escalations": b.escalations(),
        "human_decisions": b.humans(), "side_effects": b.side_effects(), "platform": b.platform(),
        "budget": b.budget(), "faults": b.faults(), "waits": b.waits(), "requests": b.requests(), "egress": b.egress(),
        "secrets": {"faked": sorted(observed.plan.secrets),
                    "missing": sorted(set(observed.plan.spec["scope"]["secrets"]) - set(observed.plan.secrets))},
    }
    latencies: dict[str, list[float]] = defaultdict(list)
    for (_, _, step_id), event in b.events.items():
        latencies[step_id].append(float(event.latency_ms or 0))
    platform = observed.platform
    durations = [(r.finished_at - r.started_at).total_seconds() for r in observed.states.values()
                 if r.finished_at is not None and r.started_at is not None]
    timings = {**{k: round(v, 3) for k, v in observed.timings.items()},
               "recovery_s": _round(platform.recovery_s, 3), "replacement_worker_ready_s":
                   _round(platform.replacement_ready_s, 3),
               "database_restart_s": platform.db_restart.get("duration_s") if platform.db_restart else None,
               "longest_run_s": round(max(durations), 3) if durations else None,
               "step_latency_ms": {s.id: {"p50": _percentile(latencies[s.id], 0.5),
                                          "p95": _percentile(latencies[s.id], 0.95),
                                          "max": _percentile(latencies[s.id], 1.0)} for s in source.spec.steps}}
    label = profile_label(observed.options.profile)
    report: dict[str, Any] = {
        "rehearsal_id": observed.rehearsal_id, "agent": source.agent_name, "version": source.version,
        "source": source.origin, "tenant": source.tenant_name, "spec_hash": source.spec_hash,
        "profile": {"name": label, "rank": PROFILE_RANKS.get(label, 0),
                    "description": observed.options.profile.description},
        "seed": observed.options.seed, "items": observed.options.items, "repeat": observed.options.repeat,
        "verdict": _verdict(source.spec, figures, observed.options.repeat),
        "figures": figures, "timings": timings, "changes": [],
    }
    report["changes"] = _changes(b, figures)
    return report


def headline(report: dict[str, Any]) -> Headline:
    """The figures a rehearsal record keeps beside its report."""
    figures = report["figures"]
    return Headline(verdict=report["verdict"]["result"], measured=figures["end_to_end"]["measured"],
                    projected=figures["end_to_end"]["projected"], slo=figures["end_to_end"]["slo"],
                    pass_k=figures["pass_k"]["value"], duplicates=figures["side_effects"]["duplicates"],
                    recovery_s=report["timings"].get("recovery_s"))


# ---- the terminal table -------------------------------------------------------------------------------------

def _kv(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "—"


def _lines(rows: Iterable[list[str]]) -> list[str]:
    table = [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]


def render_table(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    f = report["figures"]
    e2e, pk, se, human = f["end_to_end"], f["pass_k"], f["side_effects"], f["human_decisions"]
    verdict = report["verdict"]
    who = f"{report['agent']}" + (f" v{report['version']}" if report["version"] else " (file)")
    out = [f"Rehearsal of {who}" + (f" (tenant {report['tenant']})" if report.get("tenant") else "")
           + f" — profile {report['profile']['name']}, seed {report['seed']}, {report['items']} items x "
             f"{report['repeat']} repetitions",
           f"Verdict: {verdict['result'].upper()} — " + "; ".join(verdict["reasons"]), ""]
    target = f"target {_pct(pk['min'])}" if pk["min"] is not None else "no target (objective.slo.pass_k)"
    platform = f["platform"]
    kill = platform["worker_kill"]
    recovery = report["timings"].get("recovery_s")
    if kill is None:
        kill_text = "not in this profile"
    elif not kill["killed"]:
        kill_text = "planned, not reached"
    else:
        kill_text = (f"kill -9 in repetition {kill['repetition']}, item {kill['item']}, step {kill['step']} "
                     f"({kill['in_flight']} in flight); progress again after "
                     + (f"{recovery:.1f}s" if recovery is not None else "— (never)"))
    human_text = (f"{human['escalated_items']} item(s) escalated, {human['approvals']} approval(s) answered, "
                  f"{human['unknown_outcomes']} unknown outcome(s) to check")
    summary = [
        ["end to end", f"measured {_pct(e2e['measured'])} ({e2e['succeeded']}/{e2e['tries']} tries) | projected "
                       f"{_pct(e2e['projected'])} (product of the steps) | SLO {_pct(e2e['slo'])}"],
        [f"pass^{pk['k']}", f"{_pct(pk['value'])} ({pk['items_all_tries']}/{pk['items']} items succeeded in all "
                            f"{report['repeat']} tries) | {target}"],
        ["wrong answers", f"{e2e['silently_wrong']} tries accepted an answer the rehearsal knew was wrong"],
        ["side effects", f"{se['duplicates']} duplicated (counted at the upstream) | {se['effects']} carried out | "
                         f"{se['resent_keys']} request(s) re-sent an idempotency key"],
        ["worker", kill_text],
        ["queue", platform["queue"] or "not in this profile"],
        ["humans", human_text],
    ]
    waits = f["waits"]
    if waits["deferred"] or waits["failed_on_open_circuit"]:
        summary.append(["waits", f"{waits['deferred']} step(s) released the worker to wait ({waits['circuit_open']} "
                                 f"on an open circuit breaker); {waits['failed_on_open_circuit']} failed on one"])
    if platform.get("database_restart"):
        summary.append(["database", f"restart command exited {platform['database_restart']['exit_code']}"])
    out += _lines(summary)
    out.append("")
    latency = report["timings"]["step_latency_ms"]
    rows = [["step", "kind", "reached", "passed", "success", "retries (by category)", "latency p50/p95/max ms"]]
    for s in f["steps"]:
        lat = latency.get(s["id"], {})
        passed = f"{s['passed']}" + (f" (+{s['accepted_wrong']} wrong)" if s["accepted_wrong"] else "")
        rows.append([s["id"], s["kind"], str(s["reached"]), passed, _pct(s["success"]), _kv(s["retries"]),
                     "/".join("—" if lat.get(q) is None else f"{lat[q]:.0f}" for q in ("p50", "p95", "max"))])
    out += _lines(rows)
    esc = f["escalations"]
    if esc["by_reason"]:
        out += ["", f"escalations and failures ({esc['items']})"]
        out += [f"  {g['count']:>3} x {g['step']} [{g['category']}] {g['why']}: {g['example'][:100]}"
                for g in esc["by_reason"][:8]]
    budget = f["budget"]
    out += ["", "budget  cost ${} in all, ${} for the costliest run (max_cost_usd {}) | steps per item {} of {} | "
                "model calls per item {} of {} | longest run {}s of {}s".format(
                    budget["cost_usd_total"], budget["cost_usd_max_run"], budget["max_cost_usd"] or "unset",
                    budget["steps_per_item_max"], budget["max_steps"], budget["llm_calls_per_item_max"],
                    budget["max_llm_calls"], report["timings"].get("longest_run_s"), budget["max_duration_s"])]
    faults = f["faults"]
    out.append(f"faults  tools: {_kv({k: v for k, v in faults['tools'].items() if k != 'ok'})} | "
               f"models: {_kv({k: v for k, v in faults['models'].items() if k != 'ok'})}")
    eg = f["egress"]
    where = ("all to the rehearsal upstream" if eg["only_rehearsal_upstream"]
             else f"{eg['refused']} REFUSED: {', '.join(eg['refused_hosts'])}")
    out.append(f"egress  {eg['hops']} request(s), {where}"
               + f"; secrets faked: {', '.join(f['secrets']['faked']) or 'none'}"
               + (f"; missing in the tenant: {', '.join(f['secrets']['missing'])}" if f["secrets"]["missing"] else ""))
    out += ["", "Changes that would most improve it:" if report["changes"] else "Changes: none needed, nothing failed."]
    for i, c in enumerate(report["changes"], 1):
        out.append(f"  {i}. {c['change']}")
        out.append(f"     evidence: {c['evidence']}")
    t = report["timings"]
    out += ["", f"took {t.get('total_s', 0):.1f}s (space ready {t.get('space_ready_s', 0):.1f}s, runs "
                f"{t.get('runs_s', 0):.1f}s)"]
    return "\n".join(out)
