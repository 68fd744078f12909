"""Reliability read models: the operator's read functions (the write side is tenants.reliability.derive).

Read functions return plain frozen dataclasses (picklable, so the dashboard can cache them) and
never scan ``runs``: figures come from the rollup tables; live counts are index lookups. Approvals,
budgets, secrets (metadata only, never values), scope violations and the audit chains come from
their owning domains (small tables, or indexed and bounded reads).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tenants.approvals.repository import PlatformApprovalRepository
from tenants.audit.service import verify as verify_audit_chain
from tenants.budgets.repository import PlatformBudgetRepository
from tenants.budgets.service import usage_by_tenant
from tenants.kit.ids import utcnow
from tenants.reliability.derive import day_of, hour_of
from tenants.reliability.repository import PlatformReliabilityRepository, bulk_loader
from tenants.runs.events import verify_chain
from tenants.secrets.service import metadata_by_tenant
from tenants.security.repository import PlatformSecurityRepository
from tenants.webhooks.repository import webhook_platform_repository

__all__ = [
    "BURN_METRICS",
    "DEFAULT_SLO",
    "AgentReliability",
    "ApprovalRow",
    "AuditCheck",
    "BudgetUse",
    "Counts",
    "EscalatedItem",
    "Escalations",
    "FailurePoint",
    "FailureRow",
    "KeyRow",
    "Overview",
    "ReservationRow",
    "RunDetail",
    "RunRow",
    "ScopeRow",
    "SecretRow",
    "SecurityPosture",
    "StepReliability",
    "TenantBurn",
    "TenantPosture",
    "TenantRow",
    "TenantsAndBudgets",
    "ThresholdRow",
    "ViolationRow",
    "budget_burn",
    "escalations",
    "failures_over_time",
    "load_rows",
    "overview",
    "reliability",
    "run_detail",
    "search_runs",
    "security_posture",
    "table_count",
    "tenants_and_budgets",
]

DEFAULT_SLO = 0.95  # runner.spec.Slo's default; tenants/ reads the stored spec JSON, not the runner's model
STUCK_GRACE = timedelta(minutes=2)
KEY_MAX_AGE_DAYS = 90
KEY_IDLE_DAYS = 30
BROAD_SCOPE_TOOLS = 8
VIOLATION_WINDOW = timedelta(days=7)
LATEST_VIOLATIONS = 5
DECIDED_WINDOW = timedelta(hours=24)
BURN_METRICS = ("cost_usd", "tokens", "llm_calls", "runs")  # per-period metrics shown as budget burn
VIOLATION_NOUNS = {"host": "egress", "tool": "tool", "secret": "secret"}


@dataclass(frozen=True, slots=True)
class Counts:
    """Run outcomes over a window. Success rate = succeeded / (finished - cancelled)."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    escalated: int = 0
    cancelled: int = 0
    budget_exhausted: int = 0
    duration_ms_sum: int = 0
    cost_usd: Decimal = Decimal(0)

    @classmethod
    def of(cls, values: Any) -> Counts:
        v = list(values)
        return cls(int(v[0] or 0), int(v[1] or 0), int(v[2] or 0), int(v[3] or 0), int(v[4] or 0),
                   int(v[5] or 0), int(v[6] or 0), Decimal(str(v[7] or 0)))

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.started + other.started, self.succeeded + other.succeeded, self.failed + other.failed,
                      self.escalated + other.escalated, self.cancelled + other.cancelled,
                      self.budget_exhausted + other.budget_exhausted, self.duration_ms_sum + other.duration_ms_sum,
                      self.cost_usd + other.cost_usd)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.escalated + self.cancelled + self.budget_exhausted

    @property
    def decided(self) -> int:
        return self.finished - self.cancelled

    @property
    def not_succeeded(self) -> int:
        return self.failed + self.escalated + self.budget_exhausted

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.decided if self.decided else None

    @property
    def avg_duration_s(self) -> float | None:
        return self.duration_ms_sum / 1000 / self.finished if self.finished else None


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """One configured limit of a tenant with its current period's use (``tenants.budgets``)."""

    tenant_id: str
    tenant: str
    agent: str
    metric: str
    period: str
    timezone: str
    limit: Decimal
    used: Decimal
    reserved: Decimal
    overspend: Decimal
    period_start: datetime | None
    period_end: datetime | None

    @property
    def used_rate(self) -> float | None:
        """Used ÷ limit (None for a zero limit)."""
        return float(self.used / self.limit) if self.limit > 0 else None

    @property
    def committed_rate(self) -> float | None:
        """(Used + reserved) ÷ limit: what the threshold events (50/80/100 %) measure."""
        return float((self.used + self.reserved) / self.limit) if self.limit > 0 else None

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.limit - self.used - self.reserved)


@dataclass(frozen=True, slots=True)
class TenantBurn:
    """A tenant's budget burn: per metric, the limit closest to exhaustion (by committed share)."""

    tenant_id: str
    tenant: str
    by_metric: dict[str, BudgetUse]

    @property
    def peak(self) -> BudgetUse | None:
        rated = [u for u in self.by_metric.values() if u.committed_rate is not None]
        return max(rated, key=lambda u: u.committed_rate or 0.0) if rated else None


def _budget_uses(session: Session, names: dict[str, str], now: datetime) -> tuple[BudgetUse, ...]:
    out = []
    for tid, uses in usage_by_tenant(session, now=now).items():
        for u in uses:
            out.append(BudgetUse(tid, names.get(tid, tid), u.agent, u.metric, u.period, u.timezone, u.limit, u.used,
                                 u.reserved, u.overspend, u.period_start, u.period_end))
    return tuple(sorted(out, key=lambda u: (u.tenant, u.metric, u.agent, u.period)))


def budget_burn(uses: tuple[BudgetUse, ...]) -> tuple[TenantBurn, ...]:
    """Per tenant and per-period metric (:data:`BURN_METRICS`), the limit closest to exhaustion; tenants
    nearest to a limit first."""
    by_tenant: dict[str, dict[str, BudgetUse]] = defaultdict(dict)
    names: dict[str, str] = {}
    for u in uses:
        if u.metric not in BURN_METRICS:
            continue
        names[u.tenant_id] = u.tenant
        best = by_tenant[u.tenant_id].get(u.metric)
        if best is None or (u.committed_rate or 0.0) > (best.committed_rate or 0.0):
            by_tenant[u.tenant_id][u.metric] = u
    burns = [TenantBurn(tid, names[tid], metrics) for tid, metrics in by_tenant.items()]
    return tuple(sorted(burns, key=lambda b: (-(b.peak.committed_rate or 0.0) if b.peak else 0.0, b.tenant)))


@dataclass(frozen=True, slots=True)
class FailureRow:
    at: datetime
    tenant_id: str
    tenant: str
    agent_name: str
    run_id: str
    state: str
    category: str
    reason: str


@dataclass(frozen=True, slots=True)
class TenantSpend:
    tenant_id: str
    tenant: str
    runs_24h: int
    cost_24h: Decimal
    cost_7d: Decimal


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    hourly: tuple[tuple[datetime, Counts], ...]  # last 24 hour buckets, oldest first, zero-filled
    last_24h: Counts
    last_7d: Counts
    live: dict[str, int]
    spend: tuple[TenantSpend, ...]
    budgets: tuple[TenantBurn, ...]
    pending_approvals: int
    latest_failures: tuple[FailureRow, ...]


def _names(repo: PlatformReliabilityRepository) -> dict[str, str]:
    return {t.id: t.name for t in repo.tenants()}


def _window_start(now: datetime, hours: int) -> datetime:
    """The first hour bucket of a window of ``hours`` buckets ending with the current (partial) hour."""
    return hour_of(now) - timedelta(hours=hours - 1)


def overview(session: Session, *, now: datetime | None = None, failures: int = 20) -> Overview:
    """Runs per hour (24 h), success rates (24 h, 7 d), live counts, spend and budget burn per tenant,
    pending approvals, latest failures."""
    now = now or utcnow()
    repo = PlatformReliabilityRepository(session)
    names = _names(repo)
    since_24h, since_7d = _window_start(now, 24), _window_start(now, 24 * 7)
    by_hour = {row[0]: Counts.of(row[1:]) for row in repo.run_totals_by_hour(since_24h)}
    hourly = tuple((since_24h + timedelta(hours=i), by_hour.get(since_24h + timedelta(hours=i), Counts()))
                   for i in range(24))
    last_24h = sum((c for _, c in hourly), Counts())
    per_agent_7d = repo.run_totals_by_agent(since_7d)
    per_agent_24h = repo.run_totals_by_agent(since_24h)
    last_7d = sum((Counts.of(row[2:]) for row in per_agent_7d), Counts())
    cost_7d: dict[str, Decimal] = defaultdict(Decimal)
    for row in per_agent_7d:
        cost_7d[row[0]] += Counts.of(row[2:]).cost_usd
    t24: dict[str, Counts] = defaultdict(Counts)
    for row in per_agent_24h:
        t24[row[0]] += Counts.of(row[2:])
    spend = tuple(sorted(
        (TenantSpend(tid, names.get(tid, tid), t24[tid].started, t24[tid].cost_usd, cost_7d[tid])
         for tid in set(cost_7d) | set(t24)),
        key=lambda s: (-s.cost_24h, s.tenant)))
    latest = tuple(FailureRow(f.at, f.tenant_id, names.get(f.tenant_id, f.tenant_id), f.agent_name, f.run_id,
                              f.state, f.category, f.reason or "") for f in repo.latest_failures(failures))
    return Overview(now=now, hourly=hourly, last_24h=last_24h, last_7d=last_7d,
                    live=repo.live_counts(now, now - STUCK_GRACE), spend=spend,
                    budgets=budget_burn(_budget_uses(session, names, now)),
                    pending_approvals=PlatformApprovalRepository(session).pending_count(), latest_failures=latest)


@dataclass(frozen=True, slots=True)
class StepReliability:
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
    names = _names(repo)
    since = _window_start(now, 24 * days)
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
    hour: datetime
    category: str
    count: int


def failures_over_time(session: Session, *, hours: int = 24 * 7, tenant_id: str | None = None,
                       agent_name: str | None = None, now: datetime | None = None) -> tuple[FailurePoint, ...]:
    """Failed / escalated / budget-exhausted runs per hour and category."""
    now = now or utcnow()
    rows = PlatformReliabilityRepository(session).failures_by_hour(_window_start(now, hours), tenant_id, agent_name)
    return tuple(FailurePoint(r[0], str(r[1]), int(r[2] or 0)) for r in rows)


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    tenant_id: str
    tenant: str
    agent_name: str
    agent_version: int
    state: str
    failure_category: str | None
    reason: str | None
    items_total: int
    items_done: int
    items_failed: int
    cost_usd: Decimal
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    lease_until: datetime | None


def _run_row(run: Any, names: dict[str, str]) -> RunRow:
    return RunRow(run.id, run.tenant_id, names.get(run.tenant_id, run.tenant_id), run.agent_name,
                  run.agent_version, run.state, run.failure_category, run.reason, run.items_total, run.items_done,
                  run.items_failed, Decimal(run.cost_usd or 0), run.created_at, run.started_at, run.finished_at,
                  run.updated_at, run.lease_until)


def search_runs(session: Session, *, tenant_id: str | None = None, agent_name: str | None = None,
                state: str | None = None, run_id: str | None = None, limit: int = 100) -> tuple[RunRow, ...]:
    """Newest runs matching every given filter (index lookups, bounded by ``limit``)."""
    repo = PlatformReliabilityRepository(session)
    names = _names(repo)
    runs = repo.search_runs(tenant_id=tenant_id or None, agent_name=agent_name or None, state=state or None,
                            run_id=(run_id or "").strip() or None, limit=limit)
    return tuple(_run_row(r, names) for r in runs)


@dataclass(frozen=True, slots=True)
class RunDetail:
    run: RunRow
    items: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]
    checkpoints: tuple[dict[str, Any], ...]
    side_effects: tuple[dict[str, Any], ...]
    retries: int
    chain_ok: bool
    chain_note: str


def run_detail(session: Session, run_id: str, *, limit: int = 1000) -> RunDetail | None:
    """One run's timeline: items, decision events, checkpoints (attempts), side effects, cost."""
    repo = PlatformReliabilityRepository(session)
    run = repo.run(run_id)
    if run is None:
        return None
    names = _names(repo)
    events = repo.run_events(run_id, limit)
    verdict = verify_chain({c.key: getattr(e, c.key) for c in e.__table__.columns} for e in events)
    cps = repo.run_checkpoints(run_id, limit)
    return RunDetail(
        run=_run_row(run, names),
        items=tuple({"item": i.item_index, "state": i.state, "category": i.failure_category, "reason": i.reason,
                     "steps_used": i.steps_used, "llm_calls": i.llm_calls, "updated_at": i.updated_at}
                    for i in repo.run_items(run_id, limit)),
        events=tuple({"seq": e.seq, "at": e.created_at, "kind": e.kind, "item": e.item_index, "step": e.step_id,
                      "considered": e.considered, "chose": e.chosen, "why": e.why, "category": e.failure_category,
                      "cost_usd": float(e.cost_usd or 0), "latency_ms": float(e.latency_ms or 0)} for e in events),
        checkpoints=tuple({"item": c.item_index, "step_index": c.step_index, "step": c.step_id, "status": c.status,
                           "attempts": c.attempts, "retries": max(0, c.attempts - 1),
                           "latency_ms": float(c.latency_ms or 0), "output_hash": c.output_hash[:12],
                           "at": c.created_at} for c in cps),
        side_effects=tuple({"idempotency_key": s.idempotency_key, "item": s.item_index, "step": s.step_id,
                            "tool": s.tool, "outcome": s.state, "attempts": s.attempts,
                            "created_at": s.created_at, "completed_at": s.completed_at}
                           for s in repo.run_side_effects(run_id, limit)),
        retries=sum(max(0, c.attempts - 1) for c in cps),
        chain_ok=verdict.ok,
        chain_note=("no decision events recorded" if not verdict.events
                    else f"{verdict.events} decision events, hash chain intact" if verdict.ok
                    else f"hash chain broken at seq {verdict.first_bad_seq}: {verdict.reason}"),
    )


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """One approval (``tenants.approvals``): the action waiting for, or decided by, the routed role."""

    id: str
    tenant_id: str
    tenant: str
    agent_name: str
    run_id: str
    step_id: str
    action: str
    route: str
    rule: str
    on_timeout: str
    state: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class EscalatedItem:
    """One item of an escalated run waiting for a human (skip / fail / resume through the API)."""

    run_id: str
    item_index: int
    tenant_id: str
    tenant: str
    agent_name: str
    category: str | None
    reason: str | None
    since: datetime


@dataclass(frozen=True, slots=True)
class Escalations:
    now: datetime
    escalated: tuple[RunRow, ...]
    waiting_approval: tuple[RunRow, ...]
    items: tuple[EscalatedItem, ...]
    pending: tuple[ApprovalRow, ...]
    pending_total: int
    decided: tuple[ApprovalRow, ...]


def _approval_row(a: Any, names: dict[str, str]) -> ApprovalRow:
    return ApprovalRow(a.id, a.tenant_id, names.get(a.tenant_id, a.tenant_id), a.agent_name, a.run_id, a.step_id,
                       a.action, a.route, a.rule, a.on_timeout, a.state, a.created_at, a.expires_at, a.decided_at,
                       a.decided_by, a.comment)


def escalations(session: Session, *, limit: int = 200, now: datetime | None = None) -> Escalations:
    """What waits for a human: escalated runs and their escalated items, runs waiting for approval, the
    pending approval queue (soonest expiry first) and the approvals decided or expired in the last 24 h."""
    now = now or utcnow()
    repo = PlatformReliabilityRepository(session)
    approvals = PlatformApprovalRepository(session)
    names = _names(repo)
    escalated = tuple(_run_row(r, names) for r in repo.runs_in_states(["escalated"], limit))
    runs = {r.id: r for r in escalated}
    items = tuple(EscalatedItem(i.run_id, i.item_index, i.tenant_id, names.get(i.tenant_id, i.tenant_id),
                                runs[i.run_id].agent_name, i.failure_category, i.reason,
                                i.updated_at or runs[i.run_id].updated_at)
                  for i in repo.escalated_items(list(runs), limit * 4))
    return Escalations(
        now=now,
        escalated=escalated,
        waiting_approval=tuple(_run_row(r, names) for r in repo.runs_in_states(["waiting_approval"], limit)),
        items=tuple(sorted(items, key=lambda i: (i.since, i.run_id, i.item_index))),
        pending=tuple(_approval_row(a, names) for a in approvals.pending(limit)),
        pending_total=approvals.pending_count(),
        decided=tuple(_approval_row(a, names) for a in approvals.decided_since(now - DECIDED_WINDOW, limit)),
    )


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    tenant_id: str | None
    tenant: str
    role: str
    name: str
    prefix: str
    age_days: float
    last_used_days: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class ScopeRow:
    agent_name: str
    version: int
    tools: int
    egress: int
    secrets: int
    approvals: int
    wildcard_egress: bool


@dataclass(frozen=True, slots=True)
class SecretRow:
    """A secret's metadata (``tenants.secrets``; never its value)."""

    name: str
    age_days: int
    max_age_days: int | None
    created_at: datetime
    last_rotated_at: datetime | None
    last_used_at: datetime | None
    current_version: int | None
    pending_version: int | None
    previous_version: int | None
    overdue: bool

    @property
    def status(self) -> str:
        if self.overdue:
            return f"OVERDUE ({self.age_days} d > {self.max_age_days} d)"
        if self.pending_version is not None:
            return f"rotation pending (v{self.pending_version} not promoted)"
        if self.max_age_days is None:
            return "no rotation policy"
        return f"ok ({self.max_age_days - self.age_days} d left)"


@dataclass(frozen=True, slots=True)
class ViolationRow:
    at: datetime
    agent_name: str
    run_id: str
    step_id: str
    kind: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """The result of recomputing a tenant's audit hash chain (``tenants.audit.service.verify``)."""

    ok: bool
    events: int
    first_bad_seq: int | None
    reason: str

    @property
    def summary(self) -> str:
        if self.ok:
            return f"intact ({self.events} events)" if self.events else "intact (no events yet)"
        return f"BROKEN at seq {self.first_bad_seq}: {self.reason}"


@dataclass(frozen=True, slots=True)
class TenantPosture:
    tenant_id: str
    tenant: str
    score: int
    reasons: tuple[str, ...]
    keys: tuple[KeyRow, ...]
    scopes: tuple[ScopeRow, ...]
    chains_checked: int
    chains_broken: int
    secrets: tuple[SecretRow, ...]
    violations_7d: dict[str, int]  # kind (tool | host | secret) -> blocked attempts in the last 7 days
    latest_violations: tuple[ViolationRow, ...]
    audit: AuditCheck

    @property
    def overdue_secrets(self) -> int:
        return sum(1 for s in self.secrets if s.overdue)


@dataclass(frozen=True, slots=True)
class SecurityPosture:
    tenants: tuple[TenantPosture, ...]  # lowest score first
    operator_keys: tuple[KeyRow, ...]
    platform_audit: AuditCheck  # the chain of operator actions outside any tenant


def _days(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds() / 86400)


def _key_row(k: Any, names: dict[str, str], now: datetime) -> KeyRow:
    return KeyRow(k.id, k.tenant_id, names.get(k.tenant_id, "(operator)") if k.tenant_id else "(operator)",
                  k.role, k.name, k.prefix, _days(now, k.created_at) or 0.0, _days(now, k.last_used_at),
                  k.revoked_at is not None or (k.expires_at is not None and k.expires_at <= now))  # rotated out


def _scope_row(version: int, name: str, spec: Any) -> ScopeRow:
    scope = (spec or {}).get("scope") or {}
    egress = list(scope.get("egress") or [])
    approvals = ((spec or {}).get("autonomy") or {}).get("approvals") or []
    return ScopeRow(name, version, len(scope.get("tools") or []), len(egress), len(scope.get("secrets") or []),
                    len(approvals), any("*" in str(h) for h in egress))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _score(keys: list[KeyRow], scopes: list[ScopeRow], broken: int, checked: int,
           secrets: list[SecretRow], violations: dict[str, int], audit: AuditCheck) -> tuple[int, list[str]]:
    score, reasons = 100, []
    if not audit.ok:
        score -= 40
        reasons.append(f"audit chain broken at seq {audit.first_bad_seq}: {audit.reason}")
    overdue = [s for s in secrets if s.overdue]
    if overdue:
        score -= min(30, 10 * len(overdue))
        reasons.append(f"{_plural(len(overdue), 'secret')} overdue for rotation: "
                       + ", ".join(f"{s.name} ({s.age_days} d, max {s.max_age_days} d)" for s in overdue))
    for kind, n in sorted(violations.items(), key=lambda kv: (-kv[1], kv[0])):
        if n:
            score -= min(20, 5 * n)
            noun = VIOLATION_NOUNS.get(kind, kind)
            reasons.append(f"{n} blocked {noun} attempt{'' if n == 1 else 's'} in {VIOLATION_WINDOW.days} days")
    live = [k for k in keys if not k.revoked]
    old = [k for k in live if k.age_days > KEY_MAX_AGE_DAYS]
    if old:
        score -= min(20, 10 * len(old))
        reasons.append(f"{len(old)} active API key(s) older than {KEY_MAX_AGE_DAYS} days: rotate them")
    idle = [k for k in live
            if k.age_days > KEY_IDLE_DAYS and (k.last_used_days is None or k.last_used_days > KEY_IDLE_DAYS)]
    if idle:
        score -= min(15, 5 * len(idle))
        reasons.append(f"{len(idle)} active API key(s) unused for {KEY_IDLE_DAYS}+ days: revoke them")
    broad = [s for s in scopes if s.tools > BROAD_SCOPE_TOOLS]
    if broad:
        score -= min(15, 5 * len(broad))
        reasons.append(f"{len(broad)} agent(s) with more than {BROAD_SCOPE_TOOLS} tools in scope: narrow them")
    wild = [s for s in scopes if s.wildcard_egress]
    if wild:
        score -= min(20, 10 * len(wild))
        reasons.append(f"{len(wild)} agent(s) with wildcard egress hosts")
    if broken:
        score -= 40
        reasons.append(f"decision-log hash chain broken in {broken} of {checked} recent runs: investigate tampering")
    if not reasons:
        reasons.append("no findings")
    return max(0, score), reasons


def _audit_check(session: Session, tenant_id: str | None) -> AuditCheck:
    v = verify_audit_chain(session, tenant_id)
    return AuditCheck(v.ok, v.events, v.first_bad_seq, v.reason)


def _secret_rows(session: Session, now: datetime) -> dict[str, list[SecretRow]]:
    out: dict[str, list[SecretRow]] = defaultdict(list)
    for tid, metas in metadata_by_tenant(session, now=now).items():
        for m in metas:
            out[tid].append(SecretRow(m.name, m.age_days, m.max_age_days, m.created_at, m.last_rotated_at,
                                      m.last_used_at, m.current_version, m.pending_version, m.previous_version,
                                      m.rotation_due))
        out[tid].sort(key=lambda r: (not r.overdue, -r.age_days, r.name))
    return out


def security_posture(session: Session, *, now: datetime | None = None,
                     chains_per_tenant: int = 3) -> SecurityPosture:
    """Per tenant: keys by age and last use, scope breadth per agent, recent decision-log chain checks,
    secrets by age and rotation status, blocked scope / egress violations (7 days), the audit chain's
    verification, and a 0-100 score with its reasons. Also the operator keys and the platform audit chain.

    Verifying audit chains reads every tenant's chain: call it through a cache (the dashboard keeps it 60 s).
    """
    now = now or utcnow()
    repo = PlatformReliabilityRepository(session)
    security = PlatformSecurityRepository(session)
    tenants = repo.tenants()
    names = {t.id: t.name for t in tenants}
    keys: dict[str | None, list[KeyRow]] = defaultdict(list)
    for k in repo.api_keys():
        keys[k.tenant_id].append(_key_row(k, names, now))
    scopes: dict[str, list[ScopeRow]] = defaultdict(list)
    for tid, name, version, spec in repo.latest_specs():
        scopes[tid].append(_scope_row(int(version), name, spec))
    secrets = _secret_rows(session, now)
    violations: dict[str, dict[str, int]] = defaultdict(dict)
    for (tid, kind), n in security.counts_since(now - VIOLATION_WINDOW).items():
        violations[tid][kind] = n
    out = []
    for t in tenants:
        checked = broken = 0
        for run_id in repo.recent_run_ids(t.id, chains_per_tenant):
            events = repo.run_events(run_id, 10_000)
            if not events:
                continue
            checked += 1
            rows = ({c.key: getattr(e, c.key) for c in e.__table__.columns} for e in events)
            broken += int(not verify_chain(rows).ok)
        audit = _audit_check(session, t.id)
        latest = tuple(ViolationRow(v.at, v.agent_name, v.run_id, v.step_id, v.kind, v.target, v.reason)
                       for v in security.latest(t.id, LATEST_VIOLATIONS)) if violations.get(t.id) else ()
        score, reasons = _score(keys[t.id], scopes[t.id], broken, checked, secrets[t.id], violations[t.id], audit)
        out.append(TenantPosture(t.id, t.name, score, tuple(reasons), tuple(keys[t.id]), tuple(scopes[t.id]),
                                 checked, broken, tuple(secrets[t.id]), dict(violations[t.id]), latest, audit))
    return SecurityPosture(tuple(sorted(out, key=lambda p: (p.score, p.tenant))), tuple(keys[None]),
                           _audit_check(session, None))


@dataclass(frozen=True, slots=True)
class TenantRow:
    tenant_id: str
    name: str
    display_name: str
    status: str
    created_at: datetime
    agents: int
    active_keys: int
    runs_24h: Counts
    runs_7d: Counts
    limits: int = 0
    budget_peak: float | None = None  # highest committed share of any limit this period
    open_reservations: int = 0
    slots_held: int = 0
    webhooks_pending: int = 0
    webhooks_failed: int = 0


@dataclass(frozen=True, slots=True)
class ReservationRow:
    """An amount held on a tenant's budgets until the call it guards is reconciled or released."""

    tenant_id: str
    tenant: str
    id: str
    metric: str
    agent: str
    run_id: str | None
    amount: Decimal
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ThresholdRow:
    """A limit crossed 50, 80 or 100 % in a period."""

    tenant_id: str
    tenant: str
    agent: str
    metric: str
    period: str
    period_start: datetime
    threshold: int
    limit: Decimal
    committed: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class TenantsAndBudgets:
    now: datetime
    tenants: tuple[TenantRow, ...]
    budgets: tuple[BudgetUse, ...]
    reservations: tuple[ReservationRow, ...]  # one row per metric held
    reservations_total: int  # open reservations (each may hold several metrics), of the first 1,000 lines
    events: tuple[ThresholdRow, ...]


def tenants_and_budgets(session: Session, *, now: datetime | None = None, limit: int = 200) -> TenantsAndBudgets:
    """Every tenant with its agents, keys, runs and spend (24 h, 7 d), budget limits with this period's use,
    open reservations, the latest threshold events (50/80/100 %) and undelivered webhooks."""
    now = now or utcnow()
    repo = PlatformReliabilityRepository(session)
    agg_24h: dict[str, Counts] = defaultdict(Counts)
    agg_7d: dict[str, Counts] = defaultdict(Counts)
    for row in repo.run_totals_by_agent(_window_start(now, 24)):
        agg_24h[row[0]] += Counts.of(row[2:])
    for row in repo.run_totals_by_agent(_window_start(now, 24 * 7)):
        agg_7d[row[0]] += Counts.of(row[2:])
    agents: dict[str, int] = defaultdict(int)
    for tid, *_ in repo.latest_specs():
        agents[tid] += 1
    keys: dict[str, int] = defaultdict(int)
    for k in repo.api_keys():
        if k.tenant_id and k.revoked_at is None:
            keys[k.tenant_id] += 1
    tenants = repo.tenants()
    names = {t.id: t.name for t in tenants}
    budgets = PlatformBudgetRepository(session)
    uses = _budget_uses(session, names, now)
    per_tenant: dict[str, list[BudgetUse]] = defaultdict(list)
    for u in uses:
        per_tenant[u.tenant_id].append(u)
    open_rows = budgets.open_reservations(limit * 5)
    open_ids: dict[str, set[str]] = defaultdict(set)  # one reservation holds one line per metric
    for r in open_rows:
        open_ids[r.tenant_id].add(r.id)
    slots = {t: n for (t, a), n in budgets.running_counts().items() if a == "*"}
    hooks = webhook_platform_repository(session).undelivered_counts()
    rows = tuple(TenantRow(
        t.id, t.name, t.display_name, t.status, t.created_at, agents[t.id], keys[t.id], agg_24h[t.id], agg_7d[t.id],
        limits=len(per_tenant[t.id]),
        budget_peak=max((u.committed_rate for u in per_tenant[t.id] if u.committed_rate is not None), default=None),
        open_reservations=len(open_ids[t.id]), slots_held=slots.get(t.id, 0),
        webhooks_pending=hooks.get((t.id, "pending"), 0), webhooks_failed=hooks.get((t.id, "failed"), 0),
    ) for t in tenants)
    reservations = tuple(ReservationRow(r.tenant_id, names.get(r.tenant_id, r.tenant_id), r.id, r.metric, r.agent,
                                        r.run_id, r.amount, r.created_at, r.expires_at) for r in open_rows[:limit])
    events = tuple(ThresholdRow(e.tenant_id, names.get(e.tenant_id, e.tenant_id), e.agent, e.metric, e.period,
                                e.period_start, e.threshold, e.limit, e.committed, e.created_at)
                   for e in budgets.recent_events(limit))
    return TenantsAndBudgets(now, rows, uses, reservations, sum(len(ids) for ids in open_ids.values()), events)



# ---- bulk loading (seed and benchmark only) ------------------------------------------------------
def load_rows(session: Session, table_name: str, rows: list[dict[str, Any]]) -> int:
    """Bulk-insert rows into any Midwatch table (COPY on PostgreSQL); for seeding history, never for runs
    the runner executes."""
    return bulk_loader(session).load(table_name, rows)


def table_count(session: Session, table_name: str) -> int:
    """Row count of a table (benchmark reporting)."""
    return PlatformReliabilityRepository(session).count(table_name)
