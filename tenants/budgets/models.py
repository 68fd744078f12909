"""Tables: budget_limits (configuration), budgets (one ledger row per limit and period),
budget_reservations and budget_events (threshold crossings). Concurrent runs are capped by tenants.scheduling.

Amounts are exact decimals everywhere. PostgreSQL stores them as ``NUMERIC(20, 8)``; SQLite,
whose NUMERIC affinity silently turns ``0.1`` into a binary float, stores them as integers of
10⁻⁸ units, so ``used + reserved + :amount <= "limit"`` is exact integer arithmetic there too.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from tenants.kit.db import Base
from tenants.kit.types import JsonType, UtcDateTime

__all__ = [
    "AMOUNT_SCALE",
    "MAX_AMOUNT",
    "METRICS",
    "PERIOD_METRICS",
    "Budget",
    "BudgetEvent",
    "BudgetLimit",
    "BudgetReservation",
    "ExactDecimal",
    "Metric",
    "Period",
]

# The vocabulary of budgets, one home for the service, the wire schemas and the read models.
Metric = Literal["cost_usd", "tokens", "llm_calls", "runs", "concurrent_runs"]
Period = Literal["day", "month"]
METRICS: tuple[str, ...] = get_args(Metric)
PERIOD_METRICS: tuple[str, ...] = ("cost_usd", "tokens", "llm_calls", "runs")  # reservable, per period
AMOUNT_SCALE = 8  # decimal places kept for every amount (10⁻⁸ USD, or whole tokens/calls/runs)
MAX_AMOUNT = Decimal(10) ** 10  # largest limit or amount: fits NUMERIC(20, 8) and a scaled int64
_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal with 8 places: NUMERIC(20, 8) on PostgreSQL, a scaled BIGINT on SQLite."""

    impl = Numeric(20, AMOUNT_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, AMOUNT_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal | int):
            raise TypeError(f"amounts are Decimal or int, never {type(value).__name__}")
        exact = Decimal(value)
        if exact != exact.quantize(_QUANTUM):
            raise ValueError(f"amount {exact} has more than {AMOUNT_SCALE} decimal places")
        if dialect.name == "sqlite":
            return int(exact.scaleb(AMOUNT_SCALE))
        return exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-AMOUNT_SCALE).quantize(_QUANTUM)
        return Decimal(value).quantize(_QUANTUM)

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return self


class BudgetLimit(Base):
    """A configured limit: (tenant, agent or ``*``, metric, period) → limit, in a timezone."""

    __tablename__ = "budget_limits"
    __table_args__ = (
        UniqueConstraint("tenant_id", "agent", "metric", "period", name="uq_budget_limits_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent: Mapped[str] = mapped_column(String(64), default="*")  # "*": every agent of the tenant
    metric: Mapped[str] = mapped_column(String(24))  # cost_usd | tokens | llm_calls | runs | concurrent_runs
    period: Mapped[str] = mapped_column(String(8))  # day | month | none (concurrent_runs)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    limit: Mapped[Decimal] = mapped_column(ExactDecimal())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Budget(Base):
    """The ledger of one limit in one period. Created lazily by the first reservation of the period."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "agent", "metric", "period", "period_start", name="uq_budgets_period"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(24))
    period: Mapped[str] = mapped_column(String(8))
    timezone: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    period_end: Mapped[datetime] = mapped_column(UtcDateTime())
    limit: Mapped[Decimal] = mapped_column(ExactDecimal())
    used: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))
    # Actual charges beyond what was reserved (a call that cost more than its worst case).
    overspend: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BudgetReservation(Base):
    """One metric of one reservation: the amount held on ``budget_ids`` until settled or released."""

    __tablename__ = "budget_reservations"
    __table_args__ = (
        Index("ix_budget_reservations_expiry", "state", "expires_at"),
        Index("ix_budget_reservations_tenant", "tenant_id", "state", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    metric: Mapped[str] = mapped_column(String(24), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    actual: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    overspend: Mapped[Decimal] = mapped_column(ExactDecimal(), default=Decimal(0))
    budget_ids: Mapped[Any] = mapped_column(JsonType)  # the ledger rows this amount is held on
    state: Mapped[str] = mapped_column(String(16))  # reserved | settled | released | expired
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class BudgetEvent(Base):
    """A threshold (50/80/100 % of a limit) crossed in a period: recorded once per budget row."""

    __tablename__ = "budget_events"
    __table_args__ = (
        UniqueConstraint("budget_id", "threshold", name="uq_budget_events_threshold"),
        Index("ix_budget_events_tenant", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(24))
    period: Mapped[str] = mapped_column(String(8))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    threshold: Mapped[int] = mapped_column(Integer)  # 50 | 80 | 100
    limit: Mapped[Decimal] = mapped_column(ExactDecimal())
    committed: Mapped[Decimal] = mapped_column(ExactDecimal())  # used + reserved when it crossed
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
