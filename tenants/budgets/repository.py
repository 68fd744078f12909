"""All SQL for budgets: limits, period ledger rows, reservations and threshold events.

The spend check is one statement, :meth:`BudgetRepository.try_reserve`::

    UPDATE budgets SET reserved = reserved + :amount
    WHERE id = :id AND used + reserved + :amount <= "limit"
    RETURNING "limit", used, reserved

PostgreSQL (READ COMMITTED) re-checks the WHERE clause on the latest row version after waiting
for a concurrent writer's lock, and SQLite serialises writers (``BEGIN IMMEDIATE``), so two
workers can never both pass the check on the same room. There is no read-then-write anywhere.

Whether an ``INSERT ... ON CONFLICT DO NOTHING`` inserted is read from ``RETURNING``, never from
``rowcount``: with psycopg 3 under SQLAlchemy 2.1 an INSERT's rowcount is -1 (truthy) either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, literal, select, update

from tenants.budgets.models import (
    Budget,
    BudgetEvent,
    BudgetLimit,
    BudgetReservation,
    ExactDecimal,
)
from tenants.kit.db import insert_ignore
from tenants.kit.ids import new_id
from tenants.kit.repository import PlatformRepository, TenantRepository
from tenants.scheduling.models import AgentSchedule, TenantSchedule

__all__ = ["BudgetRepository", "LedgerRow", "PlatformBudgetRepository", "ReservationLine"]

_AMOUNT = ExactDecimal()


def _amount(value: Decimal) -> Any:
    """A bound amount typed as ExactDecimal (scaled int on SQLite, NUMERIC on PostgreSQL)."""
    return literal(value, _AMOUNT)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A budget row's figures right after a statement changed it (from RETURNING)."""

    id: str
    limit: Decimal
    used: Decimal
    reserved: Decimal

    @property
    def committed(self) -> Decimal:
        return self.used + self.reserved


@dataclass(frozen=True, slots=True)
class ReservationLine:
    """One metric of a reservation, as it was when a state transition claimed it."""

    metric: str
    amount: Decimal
    budget_ids: list[str]


_LEDGER_COLS = (Budget.id, Budget.limit, Budget.used, Budget.reserved)


def _ledger(row: Any) -> LedgerRow:
    return LedgerRow(id=str(row[0]), limit=row[1], used=row[2], reserved=row[3])


class BudgetRepository(TenantRepository):
    """A tenant's budgets."""

    # ---- limits ---------------------------------------------------------------------------
    def limits(self, metrics: Sequence[str] | None = None, agents: Sequence[str] | None = None
               ) -> Sequence[BudgetLimit]:
        q = select(BudgetLimit).where(BudgetLimit.tenant_id == self.tenant_id)
        if metrics is not None:
            q = q.where(BudgetLimit.metric.in_(metrics))
        if agents is not None:
            q = q.where(BudgetLimit.agent.in_(agents))
        return self.session.scalars(q.order_by(BudgetLimit.metric, BudgetLimit.agent, BudgetLimit.period)).all()

    def replace_limits(self, rows: Sequence[dict[str, Any]], now: datetime) -> None:
        """Make ``rows`` the tenant's whole set of limits; running periods take the new limit at once."""
        self.session.execute(delete(BudgetLimit).where(BudgetLimit.tenant_id == self.tenant_id))
        for row in rows:
            self.session.add(BudgetLimit(id=new_id("bl"), tenant_id=self.tenant_id, created_at=now,
                                         updated_at=now, **row))
            self.session.execute(
                update(Budget)
                .where(Budget.tenant_id == self.tenant_id, Budget.agent == row["agent"],
                       Budget.metric == row["metric"], Budget.period == row["period"],
                       Budget.timezone == row["timezone"], Budget.period_end > now)
                .values(limit=_amount(row["limit"]))
            )
        self.session.flush()

    # ---- period ledger rows ---------------------------------------------------------------
    def ledger(self, agent: str, metric: str, period: str, period_start: datetime) -> Budget | None:
        return self.session.scalar(
            select(Budget).where(Budget.tenant_id == self.tenant_id, Budget.agent == agent,
                                 Budget.metric == metric, Budget.period == period,
                                 Budget.period_start == period_start)
        )

    def ensure_ledger(self, limit: BudgetLimit, period_start: datetime, period_end: datetime,
                      now: datetime) -> str:
        """The id of ``limit``'s ledger row for the period, creating it if this is the period's first use.

        Lazy rollover: INSERT ... ON CONFLICT DO NOTHING, so concurrent first uses create one row.
        """
        key = (Budget.tenant_id == self.tenant_id, Budget.agent == limit.agent, Budget.metric == limit.metric,
               Budget.period == limit.period, Budget.period_start == period_start)
        found = self.session.scalar(select(Budget.id).where(*key))
        if found is not None:
            return str(found)
        self.session.execute(
            insert_ignore(self.session, Budget, "tenant_id", "agent", "metric", "period", "period_start")
            .values(id=new_id("bud"), tenant_id=self.tenant_id, agent=limit.agent, metric=limit.metric,
                    period=limit.period, timezone=limit.timezone, period_start=period_start,
                    period_end=period_end, limit=limit.limit, used=Decimal(0), reserved=Decimal(0),
                    overspend=Decimal(0), created_at=now)
        )
        created = self.session.scalar(select(Budget.id).where(*key))
        assert created is not None
        return str(created)

    def try_reserve(self, budget_id: str, amount: Decimal) -> LedgerRow | None:
        """Hold ``amount`` on the row if it fits under the limit; None (nothing changed) if not."""
        row = self.session.execute(
            update(Budget)
            .where(Budget.tenant_id == self.tenant_id, Budget.id == budget_id,
                   Budget.used + Budget.reserved + _amount(amount) <= Budget.limit)
            .values(reserved=Budget.reserved + _amount(amount))
            .returning(*_LEDGER_COLS)
        ).first()
        return None if row is None else _ledger(row)

    def snapshot(self, budget_id: str) -> Budget | None:
        return self.session.scalar(select(Budget).where(Budget.tenant_id == self.tenant_id, Budget.id == budget_id))

    def settle(self, budget_id: str, *, unreserve: Decimal, charge: Decimal, overspend: Decimal) -> LedgerRow | None:
        """Move ``unreserve`` out of reserved and ``charge`` into used (and count overspend)."""
        row = self.session.execute(
            update(Budget)
            .where(Budget.tenant_id == self.tenant_id, Budget.id == budget_id)
            .values(reserved=Budget.reserved - _amount(unreserve), used=Budget.used + _amount(charge),
                    overspend=Budget.overspend + _amount(overspend))
            .returning(*_LEDGER_COLS)
        ).first()
        return None if row is None else _ledger(row)

    # ---- reservations ---------------------------------------------------------------------
    def add_reservation(self, reservation_id: str, metric: str, *, agent: str, run_id: str | None,
                        amount: Decimal, now: datetime, expires_at: datetime) -> bool:
        """Insert the reservation line unless it exists; True when this call created it."""
        res = self.session.execute(
            insert_ignore(self.session, BudgetReservation, "tenant_id", "id", "metric")
            .values(tenant_id=self.tenant_id, id=reservation_id, metric=metric, agent=agent, run_id=run_id,
                    amount=amount, overspend=Decimal(0), budget_ids=[], state="reserved", created_at=now,
                    expires_at=expires_at)
            .returning(BudgetReservation.id)
        ).first()
        return res is not None

    def set_budget_ids(self, reservation_id: str, metric: str, budget_ids: list[str]) -> None:
        self.session.execute(
            update(BudgetReservation)
            .where(BudgetReservation.tenant_id == self.tenant_id, BudgetReservation.id == reservation_id,
                   BudgetReservation.metric == metric)
            .values(budget_ids=budget_ids)
        )

    def reservation_lines(self, reservation_id: str) -> Sequence[BudgetReservation]:
        return self.session.scalars(
            select(BudgetReservation)
            .where(BudgetReservation.tenant_id == self.tenant_id, BudgetReservation.id == reservation_id)
            .order_by(BudgetReservation.metric)
        ).all()

    def claim(self, reservation_id: str, from_state: str, to_state: str, now: datetime) -> list[ReservationLine]:
        """Move the reservation's lines from ``from_state`` to ``to_state``; returns the lines this call moved.

        A conditional UPDATE, so of two concurrent callers (worker and scheduler) exactly one wins.
        """
        rows = self.session.execute(
            update(BudgetReservation)
            .where(BudgetReservation.tenant_id == self.tenant_id, BudgetReservation.id == reservation_id,
                   BudgetReservation.state == from_state)
            .values(state=to_state, finished_at=now)
            .returning(BudgetReservation.metric, BudgetReservation.amount, BudgetReservation.budget_ids)
        ).all()
        return [ReservationLine(metric=str(r[0]), amount=r[1], budget_ids=list(r[2] or [])) for r in rows]

    def record_actual(self, reservation_id: str, metric: str, actual: Decimal, overspend: Decimal) -> None:
        self.session.execute(
            update(BudgetReservation)
            .where(BudgetReservation.tenant_id == self.tenant_id, BudgetReservation.id == reservation_id,
                   BudgetReservation.metric == metric)
            .values(actual=_amount(actual), overspend=_amount(overspend))
        )

    def reservations(self, *, state: str | None, limit: int) -> Sequence[BudgetReservation]:
        q = select(BudgetReservation).where(BudgetReservation.tenant_id == self.tenant_id)
        if state is not None:
            q = q.where(BudgetReservation.state == state)
        return self.session.scalars(
            q.order_by(BudgetReservation.created_at.desc(), BudgetReservation.id).limit(limit)
        ).all()

    # ---- threshold events -----------------------------------------------------------------
    def record_event(self, budget_id: str, threshold: int, committed: Decimal, now: datetime) -> BudgetEvent | None:
        """Record that ``budget_id`` crossed ``threshold`` %; None when it was already recorded."""
        ledger = self.snapshot(budget_id)
        assert ledger is not None
        inserted = self.session.execute(
            insert_ignore(self.session, BudgetEvent, "budget_id", "threshold")
            .values(tenant_id=self.tenant_id, budget_id=budget_id, agent=ledger.agent, metric=ledger.metric,
                    period=ledger.period, period_start=ledger.period_start, threshold=threshold,
                    limit=ledger.limit, committed=committed, created_at=now)
            .returning(BudgetEvent.id)
        ).first()
        if inserted is None:
            return None
        return self.session.get(BudgetEvent, inserted[0])

    def events(self, *, before: int | None, limit: int) -> Sequence[BudgetEvent]:
        q = select(BudgetEvent).where(BudgetEvent.tenant_id == self.tenant_id)
        if before is not None:
            q = q.where(BudgetEvent.id < before)
        return self.session.scalars(q.order_by(BudgetEvent.id.desc()).limit(limit)).all()

    def try_charge(self, agent: str, metric: str, period: str, period_start: datetime,
                   amount: Decimal) -> LedgerRow | None:
        """Charge ``amount`` to the period's ledger row if it fits under the limit (one conditional UPDATE);
        None when the row does not exist yet or the limit has no room."""
        row = self.session.execute(
            update(Budget)
            .where(Budget.tenant_id == self.tenant_id, Budget.agent == agent, Budget.metric == metric,
                   Budget.period == period, Budget.period_start == period_start,
                   Budget.used + Budget.reserved + _amount(amount) <= Budget.limit)
            .values(used=Budget.used + _amount(amount))
            .returning(*_LEDGER_COLS)
        ).first()
        return None if row is None else _ledger(row)


class PlatformBudgetRepository(PlatformRepository):
    """Across tenants: what has expired (scheduler), and every tenant's limits and use (operator dashboard).

    The budget tables are small (a few limits per tenant, one ledger row per limit and period), so the
    operator reads load them whole; reservations and events are read through their indexes, bounded.
    """

    def all_limits(self) -> Sequence[BudgetLimit]:
        return self.session.scalars(
            select(BudgetLimit).order_by(BudgetLimit.tenant_id, BudgetLimit.metric, BudgetLimit.agent,
                                         BudgetLimit.period)
        ).all()

    def ledgers_ending_after(self, now: datetime) -> Sequence[Budget]:
        """Ledger rows of periods still running at ``now`` (and the concurrent-runs counters)."""
        return self.session.scalars(select(Budget).where(Budget.period_end > now)).all()

    def open_reservations(self, limit: int) -> Sequence[BudgetReservation]:
        """Reservations still holding an amount, soonest expiry first (``ix_budget_reservations_expiry``)."""
        return self.session.scalars(
            select(BudgetReservation).where(BudgetReservation.state == "reserved")
            .order_by(BudgetReservation.expires_at, BudgetReservation.tenant_id, BudgetReservation.id).limit(limit)
        ).all()

    def recent_events(self, limit: int) -> Sequence[BudgetEvent]:
        """The newest threshold crossings across tenants."""
        return self.session.scalars(select(BudgetEvent).order_by(BudgetEvent.id.desc()).limit(limit)).all()

    def running_counts(self) -> dict[tuple[str, str], int]:
        """Runs holding a lease per (tenant, ``*``) and per (tenant, agent) (tenants.scheduling counts them)."""
        out = {(str(t), "*"): int(n) for t, n in self.session.execute(
            select(TenantSchedule.tenant_id, TenantSchedule.running)).all()}
        out.update({(str(t), str(a)): int(n) for t, a, n in self.session.execute(
            select(AgentSchedule.tenant_id, AgentSchedule.agent_name, AgentSchedule.running)).all()})
        return out

    def expired_reservations(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        rows = self.session.execute(
            select(BudgetReservation.tenant_id, BudgetReservation.id)
            .where(BudgetReservation.state == "reserved", BudgetReservation.expires_at < now)
            .distinct().limit(limit)
        ).all()
        return [(str(t), str(i)) for t, i in rows]
