"""The Overview page's query: runs per hour, success rates, live counts, queues, spend, budget burn, approvals,
failures, and how current the derived ones are."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from tenants.approvals.repository import PlatformApprovalRepository
from tenants.budgets.models import PERIOD_METRICS
from tenants.kit.ids import utcnow
from tenants.reliability.common import BudgetUse, Counts, Freshness, budget_uses, freshness, tenant_names, window_start
from tenants.reliability.queues import TenantQueue, tenant_queues
from tenants.reliability.repository import PlatformReliabilityRepository

__all__ = ["BURN_METRICS", "FailureRow", "Overview", "TenantBurn", "TenantSpend", "budget_burn", "overview"]

STUCK_GRACE = timedelta(minutes=2)
BURN_METRICS = PERIOD_METRICS  # per-period metrics shown as budget burn


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
    """One recent failed or escalated run (the tenant's latest-failures ring)."""

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
    """A tenant's runs and spend over the last 24 hours and 7 days."""

    tenant_id: str
    tenant: str
    runs_24h: int
    cost_24h: Decimal
    cost_7d: Decimal


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the Overview page shows, as of ``now``."""

    now: datetime
    hourly: tuple[tuple[datetime, Counts], ...]  # last 24 hour buckets, oldest first, zero-filled
    last_24h: Counts
    last_7d: Counts
    live: dict[str, int]
    spend: tuple[TenantSpend, ...]
    budgets: tuple[TenantBurn, ...]
    pending_approvals: int
    latest_failures: tuple[FailureRow, ...]
    queues: tuple[TenantQueue, ...]  # tenants with work due now, the longest-waiting first
    freshness: Freshness


def overview(session: Session, *, now: datetime | None = None, failures: int = 20) -> Overview:
    """Runs per hour (24 h), success rates (24 h, 7 d), live counts, spend and budget burn per tenant,
    pending approvals, latest failures, the tenants with work waiting, and the read models' freshness."""
    now = now or utcnow()
    fresh = freshness(session, now=now)  # first: the derived figures read below are at least this current
    repo = PlatformReliabilityRepository(session)
    names = tenant_names(repo)
    since_24h, since_7d = window_start(now, 24), window_start(now, 24 * 7)
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
                    budgets=budget_burn(budget_uses(session, names, now)),
                    pending_approvals=PlatformApprovalRepository(session).pending_count(), latest_failures=latest,
                    queues=tuple(q for q in tenant_queues(session, names, now) if q.depth), freshness=fresh)
