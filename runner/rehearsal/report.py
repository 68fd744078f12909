"""The rehearsal report: figures, verdict, and the three changes that would most improve the agent.

The changes are chosen by :mod:`runner.rehearsal.advice`; :mod:`runner.rehearsal.table` renders the
report for a terminal.

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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.rehearsal.advice import changes
from runner.rehearsal.faults import KNOWN_WRONG
from runner.rehearsal.orchestrate import Observed
from runner.rehearsal.upstream import Served
from runner.rehearsal.wording import pct, reason_kind
from runner.spec import AgentSpec, Step
from tenants.rehearsals.models import PROFILE_RANKS
from tenants.rehearsals.service import Headline

__all__ = ["FigureBuilder", "build_report", "headline", "profile_label"]

_TOOL_FAILURES = frozenset({"rate_limit", "unavailable", "html", "reset", "reset_after_apply", "truncated",
                            "timeout", "token_expiry", "bad_credential"})
_MODEL_REJECTED = KNOWN_WRONG | {"refusal", "truncated", "bad_tool_args"}
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


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


_UPSTREAM = re.compile(r"(?:https?://)?127\.0\.0\.1:(\d+)")


def _clean(text: str | None, labels: dict[int, str]) -> str:
    """A reason without run ids, idempotency keys and the upstream's ports (each shown as the host it stands
    for), so equal reasons group and figures stay the same for the same seed."""
    text = _KEY.sub("<key>", text or "")
    text = _UPSTREAM.sub(lambda m: labels.get(int(m.group(1)), "upstream"), text)
    return _RUN.sub("<run>", text)[:300]


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


class FigureBuilder:
    """The facts of an observed rehearsal (tries, step events, served requests, accepted wrong answers) and
    the figures computed from them."""

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
                groups[(step, t.category or "internal", reason_kind(reason))].append(reason)
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


# ---- the report -----------------------------------------------------------------------------------------

def _verdict(spec: AgentSpec, figures: dict[str, Any], repeat: int) -> dict[str, Any]:
    reasons: list[str] = []
    e2e = figures["end_to_end"]
    if e2e["measured"] is None or not e2e["meets_slo"]:
        reasons.append(f"measured end-to-end success {pct(e2e['measured'])} is below the SLO {pct(e2e['slo'])}")
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
            reasons.append(f"pass^{target.k} {pct(pk['value'])} is below its target {pct(target.min)}")
    passed = not reasons
    if passed:
        reasons.append(f"measured {pct(e2e['measured'])} meets the SLO {pct(e2e['slo'])}; 0 duplicate side effects"
                       + (f"; pass^{target.k} {pct(pk['value'])} meets {pct(target.min)}" if target else ""))
    return {"result": "pass" if passed else "fail", "reasons": reasons}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def build_report(observed: Observed) -> dict[str, Any]:
    """The report of an observed rehearsal (see the module docstring)."""
    b = FigureBuilder(observed)
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
    report["changes"] = changes(b, figures)
    return report


def headline(report: dict[str, Any]) -> Headline:
    """The figures a rehearsal record keeps beside its report."""
    figures = report["figures"]
    return Headline(verdict=report["verdict"]["result"], measured=figures["end_to_end"]["measured"],
                    projected=figures["end_to_end"]["projected"], slo=figures["end_to_end"]["slo"],
                    pass_k=figures["pass_k"]["value"], duplicates=figures["side_effects"]["duplicates"],
                    recovery_s=report["timings"].get("recovery_s"))
