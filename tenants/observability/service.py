"""The platform's health, read from the database: one snapshot for the metrics collector and ``midwatch status``.

- :func:`take_snapshot` reads every figure the database gauges and the status need, with bounded, indexed
  queries (live runs by the ``runs.state`` index, the small budget/breaker/secret/heartbeat tables, the
  reliability rollups), never scanning history.
- :func:`status_report` turns a snapshot into healthy / degraded / failing with reasons.
- :func:`record_heartbeat` / :func:`remove_heartbeat`: a worker or scheduler process says it is alive.

Nothing here commits: the caller (a heartbeat thread, the CLI, the collector) owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy.orm import Session

from tenants.approvals.repository import PlatformApprovalRepository
from tenants.budgets.service import usage_by_tenant
from tenants.catalog.repository import PlatformCatalogRepository
from tenants.kit.ids import utcnow
from tenants.observability.repository import PlatformHeartbeatRepository
from tenants.reliability.agent_reliability import reliability
from tenants.reliability.overview import STUCK_GRACE
from tenants.reliability.repository import PlatformReliabilityRepository
from tenants.runs.dispatch import dispatch_repository
from tenants.secrets.repository import SecretsPlatformRepository
from tenants.webhooks.repository import WebhookPlatformRepository

__all__ = [
    "ALIVE_FACTOR",
    "WINDOWS",
    "AgentFigures",
    "BreakerRow",
    "BudgetRow",
    "Heartbeat",
    "HeartbeatRow",
    "Problem",
    "SecretAge",
    "Snapshot",
    "StatusReport",
    "StatusThresholds",
    "Waiting",
    "WebhookHealth",
    "record_heartbeat",
    "remove_heartbeat",
    "short_duration",
    "status_report",
    "take_snapshot",
]

ALIVE_FACTOR = 3.0  # a process is alive while its last heartbeat is younger than 3 of its intervals
HEARTBEAT_RETENTION = timedelta(hours=1)  # rows of processes silent this long are deleted
WINDOWS = {"24h": 1, "7d": 7}  # the reliability windows the Overview and Reliability pages show
BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}
Status = Literal["healthy", "degraded", "failing"]
EXIT_CODES: dict[str, int] = {"healthy": 0, "degraded": 1, "failing": 2, "unknown": 3}


# ---- heartbeats -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Who is beating: the identity a process publishes (its row id stays the same for its lifetime)."""

    id: str
    kind: str  # worker | scheduler
    hostname: str
    pid: int
    version: str
    started_at: datetime
    interval_s: float
    threads: int = 0
    health_port: int | None = None


def record_heartbeat(session: Session, beat: Heartbeat, now: datetime | None = None) -> None:
    """Publish ``beat`` as alive at ``now`` and forget processes silent for an hour (one upsert, one delete)."""
    now = now or utcnow()
    repo = PlatformHeartbeatRepository(session)
    repo.beat({"id": beat.id, "kind": beat.kind, "hostname": beat.hostname[:255], "pid": beat.pid,
               "threads": beat.threads, "health_port": beat.health_port, "version": beat.version[:32],
               "interval_s": beat.interval_s, "started_at": beat.started_at, "last_seen_at": now})
    repo.prune(now - HEARTBEAT_RETENTION)


def remove_heartbeat(session: Session, heartbeat_id: str) -> None:
    """A clean stop: the process is gone on purpose, not dead."""
    PlatformHeartbeatRepository(session).remove(heartbeat_id)


# ---- the snapshot ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Waiting:
    """How many wait, and since when the oldest has."""

    count: int
    oldest_s: float


@dataclass(frozen=True, slots=True)
class HeartbeatRow:
    id: str
    kind: str
    hostname: str
    pid: int
    threads: int
    health_port: int | None
    version: str
    started_at: datetime
    age_s: float
    alive: bool


@dataclass(frozen=True, slots=True)
class BreakerRow:
    tenant_id: str
    host: str
    state: str  # closed | half_open | open
    since: datetime
    reason: str | None


@dataclass(frozen=True, slots=True)
class BudgetRow:
    tenant_id: str
    agent: str
    metric: str
    period: str
    limit: Decimal
    used: Decimal
    reserved: Decimal

    @property
    def committed_ratio(self) -> float | None:
        """(used + reserved) / limit, None for a zero limit."""
        return float((self.used + self.reserved) / self.limit) if self.limit > 0 else None


@dataclass(frozen=True, slots=True)
class SecretAge:
    tenant_id: str
    name: str
    age_s: float
    max_age_s: float

    @property
    def overdue(self) -> bool:
        return self.age_s >= self.max_age_s


@dataclass(frozen=True, slots=True)
class WebhookHealth:
    pending: int
    retrying: int
    failed_recent: int  # given up in the last hour


@dataclass(frozen=True, slots=True)
class StepFigures:
    step_id: str
    success: float | None
    retries: int


@dataclass(frozen=True, slots=True)
class AgentFigures:
    """One agent over one window, as the Reliability page shows it."""

    tenant_id: str
    agent: str
    runs: Mapping[str, int]  # outcome -> finished runs
    decided: int  # finished minus cancelled
    cost_usd: Decimal
    measured: float | None
    projected: float | None
    slo: float
    retries: int
    steps: tuple[StepFigures, ...]
    open_incident: bool
    mttr_s: float | None

    @property
    def below_slo(self) -> bool:
        return self.measured is not None and self.measured < self.slo - 1e-12


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every database-derived figure at ``taken_at``."""

    taken_at: datetime
    tenants: Mapping[str, tuple[str, str]]  # id -> (name, status)
    runs: Mapping[tuple[str, str], int]  # (tenant, state or "stuck") -> runs
    queued: Mapping[str, Waiting]
    escalated: Mapping[str, Waiting]
    approvals: Mapping[str, Waiting]
    approvals_overdue: Mapping[str, int]
    breakers: tuple[BreakerRow, ...]
    budgets: tuple[BudgetRow, ...]
    secrets: tuple[SecretAge, ...]
    webhooks: Mapping[str, WebhookHealth]
    agents: Mapping[str, tuple[AgentFigures, ...]]  # window -> agents
    heartbeats: tuple[HeartbeatRow, ...]
    duration_s: float = 0.0

    def tenant_name(self, tenant_id: str) -> str:
        return self.tenants.get(tenant_id, (tenant_id, ""))[0]

    def alive(self, kind: str) -> list[HeartbeatRow]:
        return [h for h in self.heartbeats if h.kind == kind and h.alive]


def _age(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


def _waiting(now: datetime, rows: list[tuple[str, int, datetime]]) -> dict[str, Waiting]:
    return {tenant: Waiting(count, _age(now, oldest)) for tenant, count, oldest in rows}


def _heartbeats(session: Session, now: datetime) -> tuple[HeartbeatRow, ...]:
    out = []
    for row in PlatformHeartbeatRepository(session).all():
        age = _age(now, row.last_seen_at)
        out.append(HeartbeatRow(row.id, row.kind, row.hostname, row.pid, row.threads, row.health_port, row.version,
                                row.started_at, age, age <= ALIVE_FACTOR * row.interval_s))
    return tuple(out)


def _breakers(session: Session) -> tuple[BreakerRow, ...]:
    out = []
    for row in PlatformCatalogRepository(session).breakers():
        state = dict(row.state or {})
        name = str(state.get("state") or "closed")
        out.append(BreakerRow(row.tenant_id, row.host, name if name in BREAKER_LEVEL else "open", row.updated_at,
                              state.get("last_reason")))
    return tuple(out)


def _budgets(session: Session, now: datetime) -> tuple[BudgetRow, ...]:
    return tuple(BudgetRow(tenant_id, u.agent, u.metric, u.period, u.limit, u.used, u.reserved)
                 for tenant_id, uses in sorted(usage_by_tenant(session, now=now).items()) for u in uses)


def _secrets(session: Session, now: datetime) -> tuple[SecretAge, ...]:
    out = []
    for secret in SecretsPlatformRepository(session).secrets_with_policy():
        assert secret.max_age_days is not None
        since = secret.last_rotated_at or secret.created_at
        out.append(SecretAge(secret.tenant_id, secret.name, _age(now, since), secret.max_age_days * 86_400.0))
    return tuple(out)


def _agents(session: Session, now: datetime) -> dict[str, tuple[AgentFigures, ...]]:
    out: dict[str, tuple[AgentFigures, ...]] = {}
    for window, days in WINDOWS.items():
        figures = []
        for a in reliability(session, days=days, now=now):
            c = a.counts
            runs = {name: int(getattr(c, name)) for name in ("succeeded", "failed", "escalated", "cancelled",
                                                             "budget_exhausted")}
            figures.append(AgentFigures(
                tenant_id=a.tenant_id, agent=a.agent_name, runs=runs, decided=c.decided, cost_usd=c.cost_usd,
                measured=a.measured, projected=a.projected, slo=a.slo, retries=a.retries,
                steps=tuple(StepFigures(s.step_id, s.success_rate, s.retries) for s in a.steps),
                open_incident=a.open_incident_since is not None, mttr_s=a.mttr_s))
        out[window] = tuple(figures)
    return out


def take_snapshot(session: Session, *, now: datetime | None = None, reliability_figures: bool = True,
                  previous: Snapshot | None = None) -> Snapshot:
    """Read every database-derived figure. ``reliability_figures=False`` reuses ``previous``'s agent figures
    (the collector refreshes the slower rollup aggregates less often)."""
    now = now or utcnow()
    runs_repo = PlatformReliabilityRepository(session)
    tenants = {t.id: (t.name, t.status) for t in runs_repo.tenants()}
    runs = {(t, s): n for t, s, n in runs_repo.live_counts_by_tenant(now, now - STUCK_GRACE)}
    pending = PlatformApprovalRepository(session).pending_by_tenant(now)
    webhooks = {t: WebhookHealth(p, r, f) for t, p, r, f in
                WebhookPlatformRepository(session).delivery_health(now - timedelta(hours=1))}
    agents = _agents(session, now) if reliability_figures or previous is None else previous.agents
    return Snapshot(
        taken_at=now, tenants=tenants, runs=runs,
        queued={f.tenant_id: Waiting(f.queued, _age(now, f.oldest_runnable_at))
                for f in dispatch_repository(session).queue_figures(now) if f.queued},
        escalated=_waiting(now, runs_repo.waiting_since_by_tenant("escalated")),
        approvals={t: Waiting(n, _age(now, oldest)) for t, n, oldest, _ in pending},
        approvals_overdue={t: late for t, _, _, late in pending if late},
        breakers=_breakers(session), budgets=_budgets(session, now), secrets=_secrets(session, now),
        webhooks=webhooks, agents=agents, heartbeats=_heartbeats(session, now))


# ---- status -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatusThresholds:
    """When a fact becomes a problem (``midwatch status`` and the documented alerts use the same numbers)."""

    queue_wait_s: float = 600.0  # oldest queued run waiting longer: degraded
    escalation_wait_s: float = 1800.0  # an escalated run waiting for a human longer: degraded
    budget_ratio: float = 0.8  # used + reserved at or above this share of a limit: degraded
    slo_window: str = "24h"
    slo_min_runs: int = 10  # an agent below its SLO counts once it has this many decided runs in the window


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Literal["degraded", "failing"]
    check: str  # workers, scheduler, stuck_runs, queue, escalations, approvals, breakers, budgets, secrets, slo,
    #             webhooks
    message: str
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    status: Status
    checked_at: datetime
    problems: tuple[Problem, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 degraded, 2 failing (3, unknown, is the CLI's when the database cannot be read)."""
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "exit_code": self.exit_code, "checked_at": self.checked_at.isoformat(),
                "problems": [{"severity": p.severity, "check": p.check, "tenant": p.tenant, "message": p.message}
                             for p in self.problems],
                "facts": self.facts}


def short_duration(seconds: float) -> str:
    """``seconds`` as an on-call engineer reads it: 45s, 12m, 3h05m, 4d."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172_800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86_400}d"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _process_problems(snap: Snapshot, _lim: StatusThresholds) -> list[Problem]:
    problems = []
    if not snap.alive("worker"):
        problems.append(Problem("failing", "workers", "no worker heartbeat: nothing executes runs (start "
                                "`midwatch worker`, check the worker pods)"))
    if not snap.alive("scheduler"):
        problems.append(Problem("failing", "scheduler", "no scheduler heartbeat: stranded runs are not recovered, "
                                "approvals do not expire, webhooks are not sent (start `midwatch scheduler`)"))
    return problems


def _run_problems(snap: Snapshot, lim: StatusThresholds) -> list[Problem]:
    name = snap.tenant_name
    problems = [Problem("degraded", "stuck_runs", f"{n} run(s) stuck with an expired lease or a lost wake-up for "
                        "over 2 minutes", name(tenant))
                for (tenant, state), n in sorted(snap.runs.items()) if state == "stuck" and n]
    problems += [Problem("degraded", "queue", f"{w.count} queued run(s), the oldest waiting "
                         f"{short_duration(w.oldest_s)} (concurrency limit, or too few workers)", name(tenant))
                 for tenant, w in sorted(snap.queued.items()) if w.oldest_s > lim.queue_wait_s]
    problems += [Problem("degraded", "escalations", f"{w.count} escalated run(s) waiting for a human, the oldest for "
                         f"{short_duration(w.oldest_s)}", name(tenant))
                 for tenant, w in sorted(snap.escalated.items()) if w.oldest_s > lim.escalation_wait_s]
    problems += [Problem("degraded", "approvals", f"{late} approval(s) past their expiry still pending (is the "
                         "scheduler running?)", name(tenant))
                 for tenant, late in sorted(snap.approvals_overdue.items())]
    return problems


def _dependency_problems(snap: Snapshot, lim: StatusThresholds) -> list[Problem]:
    name = snap.tenant_name
    problems = [Problem("degraded", "breakers", f"circuit breaker for {b.host} is {b.state.replace('_', '-')}"
                        + (f": {b.reason}" if b.reason else ""), name(b.tenant_id))
                for b in snap.breakers if b.state != "closed"]
    for u in snap.budgets:
        ratio = u.committed_ratio
        if ratio is not None and ratio >= lim.budget_ratio:
            scope = "" if u.agent == "*" else f" (agent {u.agent})"
            problems.append(Problem("degraded", "budgets", f"budget {u.metric}/{u.period}{scope} at {_pct(ratio)} of "
                                    f"{u.limit.normalize():f}", name(u.tenant_id)))
    problems += [Problem("degraded", "secrets", f"secret {s.name} is {short_duration(s.age_s)} old, its rotation "
                         f"policy allows {short_duration(s.max_age_s)}", name(s.tenant_id))
                 for s in snap.secrets if s.overdue]
    problems += [Problem("degraded", "slo", f"agent {a.agent} succeeded {_pct(a.measured)} of {a.decided} runs in "
                         f"{lim.slo_window}, SLO {_pct(a.slo)}", name(a.tenant_id))
                 for a in snap.agents.get(lim.slo_window, ()) if a.below_slo and a.decided >= lim.slo_min_runs]
    problems += [Problem("degraded", "webhooks", f"webhook deliveries failing: {h.retrying} retrying, "
                         f"{h.failed_recent} given up in the last hour", name(tenant))
                 for tenant, h in sorted(snap.webhooks.items()) if h.retrying or h.failed_recent]
    return problems


def status_report(snap: Snapshot, limits: StatusThresholds | None = None) -> StatusReport:
    """Healthy, degraded or failing, with one reason per problem, and the facts behind them."""
    lim = limits or StatusThresholds()
    problems = [*_process_problems(snap, lim), *_run_problems(snap, lim), *_dependency_problems(snap, lim)]
    status: Status = ("failing" if any(p.severity == "failing" for p in problems)
                      else "degraded" if problems else "healthy")
    return StatusReport(status, snap.taken_at, tuple(problems), _facts(snap, lim))


def _facts(snap: Snapshot, lim: StatusThresholds) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for (_, state), n in snap.runs.items():
        totals[state] = totals.get(state, 0) + n
    queued = [w for w in snap.queued.values()]
    escalated = [w for w in snap.escalated.values()]
    approvals = [w for w in snap.approvals.values()]
    return {
        "processes": [{"kind": h.kind, "host": h.hostname, "pid": h.pid, "threads": h.threads,
                       "health_port": h.health_port, "version": h.version, "alive": h.alive,
                       "last_seen_s": round(h.age_s, 1)} for h in snap.heartbeats],
        "workers_alive": len(snap.alive("worker")),
        "schedulers_alive": len(snap.alive("scheduler")),
        "runs": {state: totals.get(state, 0) for state in ("queued", "running", "waiting_approval", "escalated",
                                                           "stuck")},
        "queue": {"depth": sum(w.count for w in queued),
                  "oldest_waiting_s": round(max((w.oldest_s for w in queued), default=0.0), 1)},
        "escalations": {"waiting": sum(w.count for w in escalated),
                        "oldest_waiting_s": round(max((w.oldest_s for w in escalated), default=0.0), 1)},
        "approvals": {"waiting": sum(w.count for w in approvals),
                      "oldest_waiting_s": round(max((w.oldest_s for w in approvals), default=0.0), 1),
                      "overdue": sum(snap.approvals_overdue.values())},
        "breakers_open": sum(1 for b in snap.breakers if b.state != "closed"),
        "budgets_above_threshold": sum(1 for u in snap.budgets
                                       if (u.committed_ratio or 0.0) >= lim.budget_ratio),
        "secrets_overdue": sum(1 for s in snap.secrets if s.overdue),
        "agents_below_slo": sum(1 for a in snap.agents.get(lim.slo_window, ())
                                if a.below_slo and a.decided >= lim.slo_min_runs),
        "webhooks_failing": sum(1 for h in snap.webhooks.values() if h.retrying or h.failed_recent),
        "tenants": len(snap.tenants),
    }
