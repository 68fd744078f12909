"""Read-model tables derived from the decision log (tenants.reliability.derive): the dashboard reads these,
never scans ``runs``.

- ``run_rollups_hourly``: finished runs per (tenant, agent, hour) by terminal state, durations, cost.
- ``step_stats_daily``: step outcomes per (tenant, agent, step, day): success, failure, retries, latency.
- ``failures_hourly``: runs that ended failed / escalated / budget_exhausted, by failure category.
- ``agent_health``: per agent, the open incident (first failure since the last success) and the
  recovery times of closed incidents, which give MTTR.
- ``run_start_waits``: time-to-start (submission to first start) per (tenant, minute of the start), as a
  histogram with log-spaced buckets; kept for :data:`START_WAIT_RETENTION` (the dashboard reads the last hour).
- ``latest_failures``: a ring buffer of the last :data:`LATEST_FAILURES_PER_TENANT` failures per tenant
  (slot = seq mod N), with ``reliability_counters`` holding each tenant's sequence.

Every counter is bumped with ``INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x``, in the deriver's
transaction that also moves its cursor, so an event is counted exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import FAILURE_CATEGORIES, JsonType, UtcDateTime

__all__ = [
    "FAILURE_CATEGORIES",
    "LATEST_FAILURES_PER_TENANT",
    "START_WAIT_RATIO",
    "START_WAIT_RETENTION",
    "AgentHealth",
    "FailureHourly",
    "LatestFailure",
    "ReadModelCursor",
    "ReliabilityCounter",
    "RunRollupHourly",
    "RunStartWait",
    "StepStatDaily",
]

LATEST_FAILURES_PER_TENANT = 50
START_WAIT_RATIO = 1.1  # a bucket's upper bound over its lower: a percentile read back is within 5 % of the truth
START_WAIT_RETENTION = timedelta(hours=2)  # minutes older than this are pruned by the deriver


class _PerAgent:
    """Mixin of a rollup keyed by tenant and agent (then by its own period and dimensions)."""

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True, sort_order=-2)
    agent_name: Mapped[str] = mapped_column(String(64), primary_key=True, sort_order=-1)


class RunRollupHourly(_PerAgent, Base):
    """Run outcomes per (tenant, agent, hour), folded from the decision log."""

    __tablename__ = "run_rollups_hourly"
    __table_args__ = (Index("ix_run_rollups_hourly_hour", "hour"),)

    hour: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    started: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    escalated: Mapped[int] = mapped_column(Integer, default=0)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    budget_exhausted: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms_sum: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd_sum: Mapped[Decimal] = mapped_column(Numeric(18, 8), default=Decimal(0))


class StepStatDaily(_PerAgent, Base):
    """Step outcomes per (tenant, agent, step, day): attempts, retries, latency."""

    __tablename__ = "step_stats_daily"
    __table_args__ = (Index("ix_step_stats_daily_day", "day"),)

    step_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # calls made, retries included
    succeeded: Mapped[int] = mapped_column(Integer, default=0)  # step outcomes (after retries)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms_max: Mapped[float] = mapped_column(Float, default=0.0)


class FailureHourly(_PerAgent, Base):
    """Failures per (tenant, agent, hour, category)."""

    __tablename__ = "failures_hourly"
    __table_args__ = (Index("ix_failures_hourly_hour", "hour"),)

    hour: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    category: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class RunStartWait(Base):
    """Time-to-start histogram: runs of a tenant that first started in ``minute`` (UTC, from ``runs.started_at``)
    whose wait ``started_at - created_at`` fell in ``bucket``: 0 below 1 ms, else ``b`` for waits in
    [R^(b-1), R^b) ms with R = :data:`START_WAIT_RATIO` (see :func:`tenants.reliability.derive.wait_bucket`)."""

    __tablename__ = "run_start_waits"
    __table_args__ = (Index("ix_run_start_waits_minute", "minute"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)


class AgentHealth(Base):
    """Per agent: the last outcome, the open incident and closed incidents' recovery times (MTTR)."""

    __tablename__ = "agent_health"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_state: Mapped[str] = mapped_column(String(24))
    last_finished_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # epoch milliseconds, so the upsert can subtract portably on SQLite and PostgreSQL
    open_since_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    incidents: Mapped[int] = mapped_column(Integer, default=0)
    recovery_ms_sum: Mapped[int] = mapped_column(BigInteger, default=0)


class ReliabilityCounter(Base):
    """Per-tenant sequence of recorded failures (the ring buffer's write position)."""

    __tablename__ = "reliability_counters"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    failures_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class LatestFailure(Base):
    """Ring buffer: the last N failed / escalated runs per tenant, overwritten in place."""

    __tablename__ = "latest_failures"
    __table_args__ = (Index("ix_latest_failures_at", "at"),)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str] = mapped_column(String(40))
    agent_name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24))
    category: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class ReadModelCursor(Base):
    """How far the read-model deriver has read the append-only decision log.

    ``last_id`` is the highest event id folded in; ``gaps`` lists lower ids that were not yet visible
    when it passed them (a transaction still in flight on PostgreSQL) with when they were first seen,
    so a late commit is still counted; a gap that stays empty past a deadline was a rollback.
    """

    __tablename__ = "read_model_cursors"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    gaps: Mapped[Any] = mapped_column(JsonType, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
