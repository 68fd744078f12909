"""Test support: the read models recounted from scratch from the base tables (runs and the decision log),
written independently of tenants.reliability.derive, and the read-model tables read back in the same shape,
so a test can assert that what the deriver maintained incrementally equals a full recount."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenants.reliability.models import (
    LATEST_FAILURES_PER_TENANT,
    AgentHealth,
    FailureHourly,
    LatestFailure,
    RunRollupHourly,
    RunStartWait,
    StepStatDaily,
)
from tenants.runs.models import DecisionEvent, Run

TERMINAL = ("succeeded", "failed", "escalated", "cancelled", "budget_exhausted")
BAD = ("failed", "escalated", "budget_exhausted")
CATEGORIES = ("dependency", "auth", "validation", "budget", "scope", "approval", "state", "internal")


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def start_bucket(wait_ms: float) -> int:
    """The time-to-start bucket a wait belongs in, straight from the table's definition: 0 below 1 ms, else the
    ``b`` with 1.1^(b-1) <= wait < 1.1^b."""
    return 0 if wait_ms < 1 else math.floor(math.log(wait_ms, 1.1)) + 1


def recount(session: Session, tenants: set[str] | None = None,
            starts_since: datetime | None = None) -> dict[str, set[Any]]:
    """Every read-model figure, from the decision log and the runs alone (time-to-start only for starts in
    minutes from ``starts_since`` on: the deriver keeps two hours)."""
    e = DecisionEvent
    rows = session.execute(select(e.tenant_id, e.run_id, e.kind, e.step_id, e.failure_category, e.cost_usd,
                                  e.latency_ms, e.attempts, e.created_at, Run.agent_name, Run.started_at,
                                  Run.created_at)
                           .join(Run, Run.id == e.run_id).order_by(e.id)).all()
    waits: dict[tuple[str, datetime, int], int] = defaultdict(int)
    hours: dict[tuple[str, str, datetime], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, 0, Decimal(0)])
    steps: dict[tuple[str, str, str, datetime], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0, 0.0])
    failures: dict[tuple[str, str, datetime, str], int] = defaultdict(int)
    outcomes: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    bad_runs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for tenant, run_id, kind, step_id, category, cost, latency, attempts, at, agent, started, created in rows:
        if tenants is not None and tenant not in tenants:
            continue
        if kind == "run.started":
            hours[(tenant, agent, _hour(at))][0] += 1
            minute = (started or at).replace(second=0, microsecond=0)
            if starts_since is not None and minute >= starts_since:
                waits[(tenant, minute, start_bucket(((started or at) - created).total_seconds() * 1000))] += 1
        elif kind in ("step.succeeded", "step.failed") and step_id:
            n = max(1, attempts or 1)
            s = steps[(tenant, agent, step_id, _day(at))]
            s[0] += n
            s[1] += kind == "step.succeeded"
            s[2] += kind == "step.failed"
            s[3] += n - 1
            s[4] += float(latency or 0)
            s[5] = max(s[5], float(latency or 0))
        elif kind.startswith("run.") and kind[4:] in TERMINAL:
            state = kind[4:]
            h = hours[(tenant, agent, _hour(at))]
            h[1 + TERMINAL.index(state)] += 1
            h[6] += max(0, int((at - started).total_seconds() * 1000)) if started else 0
            h[7] += Decimal(cost or 0)
            outcomes[(tenant, agent)].append((at, state))
            if state in BAD:
                cat = category if category in CATEGORIES else "internal"
                failures[(tenant, agent, _hour(at), cat)] += 1
                bad_runs[tenant].append((run_id, cat))
    health = set()
    for (tenant, agent), seq in outcomes.items():
        open_since = None
        consecutive = incidents = recovery = 0
        for at, state in seq:
            ms = int(at.timestamp() * 1000)
            if state in BAD:
                open_since = ms if open_since is None else open_since
                consecutive += 1
            elif state == "succeeded":
                if open_since is not None:
                    incidents += 1
                    recovery += ms - open_since
                open_since, consecutive = None, 0
        health.add((tenant, agent, seq[-1][1], open_since, consecutive, incidents, recovery))
    return {
        "hours": {(*k, *v[:7], Decimal(v[7]).quantize(Decimal("0.00000001"))) for k, v in hours.items()},
        "steps": {(*k, int(v[0]), int(v[1]), int(v[2]), int(v[3]), round(v[4], 3), round(v[5], 3))
                  for k, v in steps.items()},
        "failures": {(*k, n) for k, n in failures.items()},
        "health": health,
        "latest": {(t, run_id, cat) for t, runs in bad_runs.items()
                   for run_id, cat in runs[-LATEST_FAILURES_PER_TENANT:]},
        "starts": {(*k, n) for k, n in waits.items()},
    }


def read_models(session: Session, tenants: set[str] | None = None,
                starts_since: datetime | None = None) -> dict[str, set[Any]]:
    """The read-model tables, in the shape :func:`recount` gives."""

    def mine(tenant: str) -> bool:
        return tenants is None or tenant in tenants

    return {
        "hours": {(r.tenant_id, r.agent_name, r.hour, r.started, r.succeeded, r.failed, r.escalated, r.cancelled,
                   r.budget_exhausted, r.duration_ms_sum, Decimal(r.cost_usd_sum).quantize(Decimal("0.00000001")))
                  for r in session.scalars(select(RunRollupHourly)) if mine(r.tenant_id)},
        "steps": {(s.tenant_id, s.agent_name, s.step_id, s.day, s.attempts, s.succeeded, s.failed, s.retries,
                   round(s.latency_ms_sum, 3), round(s.latency_ms_max, 3))
                  for s in session.scalars(select(StepStatDaily)) if mine(s.tenant_id)},
        "failures": {(f.tenant_id, f.agent_name, f.hour, f.category, f.count)
                     for f in session.scalars(select(FailureHourly)) if mine(f.tenant_id)},
        "health": {(h.tenant_id, h.agent_name, h.last_state, h.open_since_ms, h.consecutive_failures, h.incidents,
                    h.recovery_ms_sum) for h in session.scalars(select(AgentHealth)) if mine(h.tenant_id)},
        "latest": {(f.tenant_id, f.run_id, f.category) for f in session.scalars(select(LatestFailure))
                   if mine(f.tenant_id)},
        "starts": {(w.tenant_id, w.minute, w.bucket, w.runs) for w in session.scalars(select(RunStartWait))
                   if mine(w.tenant_id) and starts_since is not None and w.minute >= starts_since},
    }
