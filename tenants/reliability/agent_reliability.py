"""The Reliability page's queries: per agent outcomes, per-step success, projection vs SLO, MTTR; failures over time."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tenants.kit.ids import utcnow
from tenants.reliability.common import DEFAULT_SLO, Counts, tenant_names, window_start
from tenants.reliability.derive import day_of
from tenants.reliability.repository import PlatformReliabilityRepository

__all__ = ["AgentReliability", "FailurePoint", "StepReliability", "failures_over_time", "reliability"]


@dataclass(frozen=True, slots=True)
class StepReliability:
    """One step of an agent over the window: attempts, outcomes, retries and latency."""

    step_id: str
    attempts: int
    succeeded: int
    failed: int
    retries: int
    latency_ms_avg: float | None
    latency_ms_max: float

    @property
    def outcomes(self) -> int:
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.outcomes if self.outcomes else None


@dataclass(frozen=True, slots=True)
class AgentReliability:
    """One agent of a tenant over the window: outcomes, per-step success, SLO and incidents."""

    tenant_id: str
    tenant: str
    agent_name: str
    version: int | None
    slo: float
    counts: Counts
    steps: tuple[StepReliability, ...]
    last_state: str | None
    open_incident_since: datetime | None
    consecutive_failures: int
    incidents: int
    mttr_s: float | None

    @property
    def measured(self) -> float | None:
        return self.counts.success_rate

    @property
    def projected(self) -> float | None:
        """Product of the measured per-step success rates (None until every step has outcomes)."""
        rates = [s.success_rate for s in self.steps]
        if not rates or any(r is None for r in rates):
            return None
        return math.prod(r for r in rates if r is not None)

    @property
    def retries(self) -> int:
        return sum(s.retries for s in self.steps)

    @property
    def meets_slo(self) -> bool | None:
        return None if self.measured is None else self.measured >= self.slo - 1e-12


def _spec_slo(spec: Any) -> float:
    try:
        return float(spec["objective"]["slo"]["success_rate"])
    except (KeyError, TypeError, ValueError):
        return DEFAULT_SLO


def _spec_steps(spec: Any) -> list[str]:
    try:
        return [str(s["id"]) for s in spec["steps"]]
    except (KeyError, TypeError):
        return []


def reliability(session: Session, *, days: int = 7, now: datetime | None = None) -> tuple[AgentReliability, ...]:
    """Per tenant and agent over the last ``days``: outcomes, per-step success, projection vs SLO, MTTR."""
    now = now or utcnow()
    repo = PlatformReliabilityRepository(session)
    names = tenant_names(repo)
    since = window_start(now, 24 * days)
    counts = {(r[0], r[1]): Counts.of(r[2:]) for r in repo.run_totals_by_agent(since)}
    steps: dict[tuple[str, str], dict[str, StepReliability]] = defaultdict(dict)
    for t, a, sid, attempts, ok, bad, retries, lat_sum, lat_max in repo.step_totals(day_of(since)):
        outcomes = int(ok or 0) + int(bad or 0)
        steps[(t, a)][sid] = StepReliability(sid, int(attempts or 0), int(ok or 0), int(bad or 0), int(retries or 0),
                                             float(lat_sum or 0) / outcomes if outcomes else None,
                                             float(lat_max or 0))
    specs = {(r[0], r[1]): (int(r[2]), r[3]) for r in repo.latest_specs()}
    health = {(h.tenant_id, h.agent_name): h for h in repo.agent_health()}
    out: list[AgentReliability] = []
    for key in sorted(set(counts) | set(specs), key=lambda k: (names.get(k[0], k[0]), k[1])):
        version, spec = specs.get(key, (None, None))
        order = _spec_steps(spec) if spec is not None else []
        measured = steps.get(key, {})
        ordered = [measured.get(sid, StepReliability(sid, 0, 0, 0, 0, None, 0.0)) for sid in order]
        ordered += [s for sid, s in sorted(measured.items()) if sid not in order]
        h = health.get(key)
        open_since = (datetime.fromtimestamp(h.open_since_ms / 1000, tz=now.tzinfo)
                      if h is not None and h.open_since_ms is not None else None)
        mttr = h.recovery_ms_sum / 1000 / h.incidents if h is not None and h.incidents else None
        out.append(AgentReliability(
            tenant_id=key[0], tenant=names.get(key[0], key[0]), agent_name=key[1], version=version,
            slo=_spec_slo(spec) if spec is not None else DEFAULT_SLO, counts=counts.get(key, Counts()),
            steps=tuple(ordered), last_state=h.last_state if h else None, open_incident_since=open_since,
            consecutive_failures=h.consecutive_failures if h else 0, incidents=h.incidents if h else 0,
            mttr_s=mttr))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class FailurePoint:
    """Failed, escalated or budget-exhausted runs of one category in one hour."""

    hour: datetime
    category: str
    count: int


def failures_over_time(session: Session, *, hours: int = 24 * 7, tenant_id: str | None = None,
                       agent_name: str | None = None, now: datetime | None = None) -> tuple[FailurePoint, ...]:
    """Failed / escalated / budget-exhausted runs per hour and category."""
    now = now or utcnow()
    rows = PlatformReliabilityRepository(session).failures_by_hour(window_start(now, hours), tenant_id, agent_name)
    return tuple(FailurePoint(r[0], str(r[1]), int(r[2] or 0)) for r in rows)
