"""What the dashboard's query modules share: run outcome counts, tenant names, windows, run rows, budget use.

The read side of the reliability read models is one query module per dashboard page, beside the read
models it reads (the write side is :mod:`tenants.reliability.derive`):

- :mod:`tenants.reliability.overview` (Overview), :mod:`tenants.reliability.agent_reliability` (Reliability),
  :mod:`tenants.reliability.run_search` (Runs), :mod:`tenants.reliability.escalations` (Approvals &
  escalations), :mod:`tenants.reliability.security_posture` (Security), :mod:`tenants.reliability.tenants_budgets`
  (Tenants & budgets).

Read functions return plain frozen dataclasses (picklable, so the dashboard can cache them) and never scan
``runs``: figures come from the rollup tables; live counts are index lookups. :mod:`tenants.reliability.queues`
holds the per-tenant queue figures two pages share. :class:`Freshness` says how current the derived figures
are: they trail the decision log by the deriver's lag, while live figures are as of the read.

Approvals, budgets, secrets (metadata only, never values), scope violations and the audit chains come from
their owning domains (small tables, or indexed and bounded reads).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tenants.budgets.service import LimitUsage, usage_by_tenant
from tenants.kit.ids import utcnow
from tenants.reliability.derive import CURSOR, hour_of
from tenants.reliability.repository import PlatformReliabilityRepository

__all__ = ["DEFAULT_SLO", "STALE_AFTER_S", "UNDERIVED_COUNT_LIMIT", "BudgetUse", "Counts", "Freshness", "RunRow",
           "budget_uses", "freshness", "run_row", "tenant_names", "window_start"]

DEFAULT_SLO = 0.95  # runner.spec.Slo's default; tenants/ reads the stored spec JSON, not the runner's model
STALE_AFTER_S = 120.0  # derived figures trailing the decision log by more than this are flagged as stale
UNDERIVED_COUNT_LIMIT = 10_000  # events not derived yet are counted up to this (a bounded read), then "10,000+"


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current a page's figures are.

    Live figures (read from the base tables: run states, queues, approvals, budgets) are as of ``read_at``.
    Derived figures (the read models: success rates, runs per hour, spend, failures, reliability,
    time-to-start) hold every decision event up to :attr:`as_of`: the deriver's last pass, or the oldest event
    it has not read yet if that is earlier. The scheduler (and ``midwatch up``) derives about once a second;
    when it is down or behind, :attr:`stale` says so.
    """

    read_at: datetime
    derived_at: datetime | None  # the deriver's last pass (it records one even when there was nothing new)
    underived: int  # decision events written and not derived yet, counted up to UNDERIVED_COUNT_LIMIT
    oldest_underived_at: datetime | None

    @property
    def as_of(self) -> datetime | None:
        """Derived figures include every decision event before this; None: no event was ever written."""
        known = [t for t in (self.derived_at, self.oldest_underived_at) if t is not None]
        return min(known) if known else None

    @property
    def lag_s(self) -> float:
        """How far the derived figures trail the read (0 when there is nothing to derive and never was)."""
        as_of = self.as_of
        return 0.0 if as_of is None else max(0.0, (self.read_at - as_of).total_seconds())

    @property
    def stale(self) -> bool:
        """The derived figures trail by more than :data:`STALE_AFTER_S`: the deriver is down or behind."""
        return self.lag_s > STALE_AFTER_S

    @property
    def underived_text(self) -> str:
        return f"{self.underived:,}+" if self.underived >= UNDERIVED_COUNT_LIMIT else f"{self.underived:,}"


def freshness(session: Session, *, now: datetime | None = None) -> Freshness:
    """The read models' freshness now (two primary-key lookups on the cursor and the decision log)."""
    derived_at, underived, oldest = PlatformReliabilityRepository(session).derivation_state(
        CURSOR, UNDERIVED_COUNT_LIMIT)
    return Freshness(now or utcnow(), derived_at, underived, oldest)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetUse(LimitUsage):
    """One configured limit of a tenant with its current period's use (:class:`LimitUsage` and whose it is)."""

    tenant_id: str
    tenant: str


def budget_uses(session: Session, names: dict[str, str], now: datetime) -> tuple[BudgetUse, ...]:
    """Every tenant's limits with this period's use, by tenant name, metric, agent and period."""
    out = [BudgetUse(tenant_id=tid, tenant=names.get(tid, tid), **{f.name: getattr(u, f.name) for f in fields(u)})
           for tid, uses in usage_by_tenant(session, now=now).items() for u in uses]
    return tuple(sorted(out, key=lambda u: (u.tenant, u.metric, u.agent, u.period)))


def tenant_names(repo: PlatformReliabilityRepository) -> dict[str, str]:
    """Tenant id -> name."""
    return {t.id: t.name for t in repo.tenants()}


def window_start(now: datetime, hours: int) -> datetime:
    """The first hour bucket of a window of ``hours`` buckets ending with the current (partial) hour."""
    return hour_of(now) - timedelta(hours=hours - 1)


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run as the pages list it (with its tenant's name)."""

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


def run_row(run: Any, names: dict[str, str]) -> RunRow:
    """A ``runs`` row as the pages show it."""
    return RunRow(run.id, run.tenant_id, names.get(run.tenant_id, run.tenant_id), run.agent_name,
                  run.agent_version, run.state, run.failure_category, run.reason, run.items_total, run.items_done,
                  run.items_failed, Decimal(run.cost_usd or 0), run.created_at, run.started_at, run.finished_at,
                  run.updated_at, run.lease_until)
