"""The Tenants & budgets page's query: tenants with their queues, limits with this period's use, reservations,
thresholds, and how current the derived figures are."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from tenants.budgets.repository import PlatformBudgetRepository
from tenants.budgets.service import ThresholdEvent
from tenants.kit.ids import utcnow
from tenants.reliability.common import BudgetUse, Counts, Freshness, budget_uses, freshness, window_start
from tenants.reliability.queues import TenantQueue, tenant_queues
from tenants.reliability.repository import PlatformReliabilityRepository
from tenants.webhooks.repository import webhook_platform_repository

__all__ = ["ReservationRow", "TenantRow", "TenantsAndBudgets", "ThresholdRow", "tenants_and_budgets"]


@dataclass(frozen=True, slots=True)
class TenantRow:
    """A tenant with its agents, keys, runs, budget peak, reservations, slots and webhooks."""

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
    queue: TenantQueue | None = None  # live queue figures and time-to-start over the last hour


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdRow(ThresholdEvent):
    """A limit crossed 50, 80 or 100 % in a period (:class:`ThresholdEvent`), with whose it is."""

    tenant_id: str
    tenant: str


@dataclass(frozen=True, slots=True)
class TenantsAndBudgets:
    """Everything the Tenants & budgets page shows, as of ``now``."""

    now: datetime
    tenants: tuple[TenantRow, ...]
    budgets: tuple[BudgetUse, ...]
    reservations: tuple[ReservationRow, ...]  # one row per metric held
    reservations_total: int  # open reservations (each may hold several metrics), of the first 1,000 lines
    events: tuple[ThresholdRow, ...]
    freshness: Freshness


def tenants_and_budgets(session: Session, *, now: datetime | None = None, limit: int = 200) -> TenantsAndBudgets:
    """Every tenant with its agents, keys, runs and spend (24 h, 7 d), budget limits with this period's use,
    open reservations, the latest threshold events (50/80/100 %), undelivered webhooks, each tenant's queue
    and time-to-start, and the read models' freshness."""
    now = now or utcnow()
    fresh = freshness(session, now=now)
    repo = PlatformReliabilityRepository(session)
    agg_24h: dict[str, Counts] = defaultdict(Counts)
    agg_7d: dict[str, Counts] = defaultdict(Counts)
    for row in repo.run_totals_by_agent(window_start(now, 24)):
        agg_24h[row[0]] += Counts.of(row[2:])
    for row in repo.run_totals_by_agent(window_start(now, 24 * 7)):
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
    uses = budget_uses(session, names, now)
    per_tenant: dict[str, list[BudgetUse]] = defaultdict(list)
    for u in uses:
        per_tenant[u.tenant_id].append(u)
    open_rows = budgets.open_reservations(limit * 5)
    open_ids: dict[str, set[str]] = defaultdict(set)  # one reservation holds one line per metric
    for r in open_rows:
        open_ids[r.tenant_id].add(r.id)
    slots = {t: n for (t, a), n in budgets.running_counts().items() if a == "*"}
    hooks = webhook_platform_repository(session).undelivered_counts()
    queues = {q.tenant_id: q for q in tenant_queues(session, names, now)}
    rows = tuple(TenantRow(
        t.id, t.name, t.display_name, t.status, t.created_at, agents[t.id], keys[t.id], agg_24h[t.id], agg_7d[t.id],
        limits=len(per_tenant[t.id]),
        budget_peak=max((u.committed_rate for u in per_tenant[t.id] if u.committed_rate is not None), default=None),
        open_reservations=len(open_ids[t.id]), slots_held=slots.get(t.id, 0),
        webhooks_pending=hooks.get((t.id, "pending"), 0), webhooks_failed=hooks.get((t.id, "failed"), 0),
        queue=queues.get(t.id),
    ) for t in tenants)
    reservations = tuple(ReservationRow(r.tenant_id, names.get(r.tenant_id, r.tenant_id), r.id, r.metric, r.agent,
                                        r.run_id, r.amount, r.created_at, r.expires_at) for r in open_rows[:limit])
    events = tuple(ThresholdRow(tenant_id=e.tenant_id, tenant=names.get(e.tenant_id, e.tenant_id),
                                **asdict(ThresholdEvent.of(e))) for e in budgets.recent_events(limit))
    return TenantsAndBudgets(now, rows, uses, reservations, sum(len(ids) for ids in open_ids.values()), events,
                             fresh)
