"""SQL for runs on the API side (submission, reads, transitions while no worker holds the run) and the
engine's reads. The engine's writes while it holds a run are :mod:`tenants.runs.journal`'s; which run a
worker claims next is :mod:`tenants.scheduling.repository`'s.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, case, func, insert, literal, null, or_, select, update
from sqlalchemy.orm import Session

from tenants.kit.db import RawStatement, execute_raw, insert_ignore, upsert
from tenants.kit.errors import LeaseLost
from tenants.kit.repository import PlatformRepository, TenantRepository, for_dialect
from tenants.runs.models import (
    SUSPENDED_REASON,
    TERMINAL_STATES,
    DecisionEvent,
    LoopCall,
    Run,
    RunItem,
    SideEffect,
    StepCheckpoint,
)

__all__ = ["PlatformRunRepository", "PostgresRunRepository", "RunRepository", "back_in_queue", "run_repository"]

ACTIVE = ("queued", "running")
_EVENT_JSON = frozenset({"considered", "verdicts"})


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


def back_in_queue(runnable_at: datetime, wake_at: datetime | None, *, state: str | None = "queued",
                  reason: str | None = None) -> dict[str, Any]:
    """UPDATE values that put a run back in the queue at ``runnable_at`` (``state=None``: keep its state) — or,
    when its tenant is suspended (``suspend_requested``, read on the row being updated, so a concurrent
    suspension or resumption is never missed), park it as ``suspended`` out of the queue instead.

    Every path that makes an unleased run runnable again uses it (a worker handing a run back or deferring
    it, the sweeper recovering a dead worker's run, a decided approval), so a suspended tenant's run never
    sits in the queue and is resumed by :meth:`tenants.scheduling.repository.ScheduleRepository.release_held`.
    """
    c = _RUNS.c
    parked = c.suspend_requested.is_(True)

    def given(column: str, value: Any) -> Any:  # a value, None (NULL) or ... (keep the column as it is)
        if value is ...:
            return c[column]
        return null() if value is None else literal(value, c[column].type)

    keep = state is None
    return {"runnable_at": case((parked, null()), else_=given("runnable_at", runnable_at)),
            "wake_at": case((parked, null()), else_=given("wake_at", wake_at)),
            "state": case((parked, literal("suspended")), else_=given("state", ... if keep else state)),
            "reason": case((parked, literal(SUSPENDED_REASON)), else_=given("reason", ... if keep else reason))}


# Tables for the engine's hot path: Core statements skip the ORM's per-statement bookkeeping.
_RUNS: Table = Run.__table__  # type: ignore[assignment]
_ITEMS: Table = RunItem.__table__  # type: ignore[assignment]
_CHECKPOINTS: Table = StepCheckpoint.__table__  # type: ignore[assignment]
_EVENTS: Table = DecisionEvent.__table__  # type: ignore[assignment]
_SIDE_EFFECTS: Table = SideEffect.__table__  # type: ignore[assignment]
ITEM_CHUNK = 1000
_ITEM_INSERT = insert(_ITEMS)  # Core, not the ORM's bulk insert: the same rows for less CPU


@functools.cache
def _run_insert(dialect: str, idempotent: bool) -> Any:
    """The run's INSERT (``idempotent``: skipped when the tenant's Idempotency-Key exists) RETURNING its id."""
    statement = (insert_ignore(dialect, _RUNS, "tenant_id", "idempotency_key",
                               where=_RUNS.c.idempotency_key.is_not(None)) if idempotent else upsert(dialect, _RUNS))
    return statement.returning(_RUNS.c.id)


@functools.cache
def _run_with_item_sql(columns: tuple[str, ...], idempotent: bool) -> RawStatement:
    """PostgreSQL: a run and its single item in ONE statement (the item's insert is gated on the run's)."""
    values = ", ".join("CAST(:r_input AS JSONB)" if c == "input" else f":r_{c}" for c in columns)
    conflict = (" ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
                if idempotent else "")
    return RawStatement.of(
        f"WITH r AS (INSERT INTO runs ({', '.join(columns)}) VALUES ({values}){conflict} RETURNING id) "
        "INSERT INTO run_items (run_id, item_index, tenant_id, input, state, steps_used, llm_calls, "
        "next_attempt) SELECT r.id, 0, :r_tenant_id, CAST(:item_input AS JSONB), 'pending', 0, 0, 1 "
        "FROM r RETURNING run_id")


class RunRepository(TenantRepository):
    """A tenant's runs and everything hanging off them."""

    # ---- submission and reads (API) -------------------------------------------------------
    def insert_run(self, run: Run, items: Sequence[Any]) -> bool:
        """Insert the run and its items unless (tenant, idempotency_key) exists; True when this call created it.
        Larger batches add their items in chunks."""
        # RETURNING, not rowcount: an INSERT's rowcount is -1 on PostgreSQL (psycopg). One statement object per
        # dialect, values as parameters: SQLAlchemy compiles it once per column set instead of building,
        # keying and compiling a statement with every submission's values in it.
        statement = _run_insert(self.session.get_bind().dialect.name, run.idempotency_key is not None)
        if self.session.execute(statement, self._run_values(run)).first() is None:
            return False
        self.insert_items(run.id, items)
        return True

    def _run_values(self, run: Run) -> dict[str, Any]:
        values = {c.key: getattr(run, c.key) for c in _RUNS.columns if getattr(run, c.key) is not None}
        values["tenant_id"] = self.tenant_id
        return values

    def insert_items(self, run_id: str, items: Iterable[Any]) -> int:
        """Store batch items in chunks; returns how many."""
        count = 0
        chunk: list[dict[str, Any]] = []
        for item in items:
            chunk.append({"run_id": run_id, "item_index": count, "tenant_id": self.tenant_id, "input": item,
                          "state": "pending", "steps_used": 0, "llm_calls": 0, "next_attempt": 1})
            count += 1
            if len(chunk) >= ITEM_CHUNK:
                self.session.execute(_ITEM_INSERT, chunk)
                chunk = []
        if chunk:
            self.session.execute(_ITEM_INSERT, chunk)
        return count

    def by_idempotency_key(self, key: str) -> Run | None:
        return self.session.scalar(select(Run).where(Run.tenant_id == self.tenant_id, Run.idempotency_key == key))

    def get(self, run_id: str, *, for_update: bool = False) -> Run | None:
        q = select(Run).where(Run.tenant_id == self.tenant_id, Run.id == run_id)
        if for_update:
            q = q.with_for_update()
        return self.session.scalar(q)

    def list(self, *, before: str | None, limit: int, state: str | None = None,
             agent: str | None = None) -> Sequence[Run]:
        q = select(Run).where(Run.tenant_id == self.tenant_id).order_by(Run.id.desc()).limit(limit)
        if before:
            q = q.where(Run.id < before)
        if state:
            q = q.where(Run.state == state)
        if agent:
            q = q.where(Run.agent_name == agent)
        return self.session.scalars(q).all()

    def items(self, run_id: str, *, after: int | None, limit: int, state: str | None = None) -> Sequence[RunItem]:
        q = (select(RunItem).where(RunItem.tenant_id == self.tenant_id, RunItem.run_id == run_id)
             .order_by(RunItem.item_index).limit(limit))
        if after is not None:
            q = q.where(RunItem.item_index > after)
        if state:
            q = q.where(RunItem.state == state)
        return self.session.scalars(q).all()

    def head(self, run_id: str) -> tuple[int, str | None, str | None] | None:
        """The run's chain head as committed now: (seq, hash, seal); a fresh read, never a cached object."""
        row = self.session.execute(select(_RUNS.c.event_seq, _RUNS.c.event_head, _RUNS.c.event_seal)
                                   .where(_RUNS.c.tenant_id == self.tenant_id, _RUNS.c.id == run_id)).first()
        return None if row is None else (int(row[0]), row[1], row[2])

    def events(self, run_id: str, *, after: int | None, limit: int) -> Sequence[DecisionEvent]:
        q = (select(DecisionEvent).where(DecisionEvent.tenant_id == self.tenant_id, DecisionEvent.run_id == run_id)
             .order_by(DecisionEvent.seq).limit(limit))
        if after is not None:
            q = q.where(DecisionEvent.seq > after)
        return self.session.scalars(q).all()

    def checkpoints(self, run_id: str, item_index: int) -> Sequence[StepCheckpoint]:
        return self.session.scalars(
            select(StepCheckpoint)
            .where(StepCheckpoint.tenant_id == self.tenant_id, StepCheckpoint.run_id == run_id,
                   StepCheckpoint.item_index == item_index)
            .order_by(StepCheckpoint.step_index)
        ).all()

    def checkpoints_between(self, run_id: str, first: int, last: int) -> Sequence[StepCheckpoint]:
        """Checkpoints of items ``first..last`` (one query per page of items)."""
        return self.session.scalars(
            select(StepCheckpoint)
            .where(StepCheckpoint.tenant_id == self.tenant_id, StepCheckpoint.run_id == run_id,
                   StepCheckpoint.item_index >= first, StepCheckpoint.item_index <= last)
        ).all()

    def side_effects(self, run_id: str, item_index: int | None = None) -> Sequence[SideEffect]:
        q = select(SideEffect).where(SideEffect.tenant_id == self.tenant_id, SideEffect.run_id == run_id)
        if item_index is not None:
            q = q.where(SideEffect.item_index == item_index)
        return self.session.scalars(q.order_by(SideEffect.item_index, SideEffect.step_index)).all()

    def escalated_items(self, *, after: tuple[str, int] | None, limit: int) -> Sequence[tuple[RunItem, Run]]:
        """Items waiting for a human (escalated), with their runs, oldest run first."""
        q = (select(RunItem, Run).join(Run, Run.id == RunItem.run_id)
             .where(RunItem.tenant_id == self.tenant_id, RunItem.state == "escalated")
             .order_by(RunItem.run_id, RunItem.item_index).limit(limit))
        if after is not None:
            q = q.where(or_(RunItem.run_id > after[0], and_(RunItem.run_id == after[0], RunItem.item_index > after[1])))
        return [(item, run) for item, run in self.session.execute(q).all()]

    def item(self, run_id: str, item_index: int) -> RunItem | None:
        return self.session.scalar(select(RunItem).where(RunItem.tenant_id == self.tenant_id,
                                                         RunItem.run_id == run_id, RunItem.item_index == item_index))

    def bump_counters(self, run_id: str, *, items_done: int = 0, items_failed: int = 0) -> None:
        c = _RUNS.c
        self.session.execute(update(_RUNS).where(c.tenant_id == self.tenant_id, c.id == run_id)
                             .values(items_done=c.items_done + items_done, items_failed=c.items_failed + items_failed))

    def set_state(self, run_id: str, *, from_states: Sequence[str], lease_free: bool = False,
                  **values: Any) -> bool:
        """Change a run's row only if it is in one of ``from_states`` (and, with ``lease_free``, no worker
        holds it) (API-side transitions)."""
        q = update(Run).where(Run.tenant_id == self.tenant_id, Run.id == run_id, Run.state.in_(from_states))
        if lease_free:
            q = q.where(Run.lease_owner.is_(None))
        res = self.session.execute(q.values(**values))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def append_event(self, run_id: str, event: dict[str, Any], *, expected_seq: int, seal: str) -> None:
        """Append a decision event to a run no worker holds, moving its chain head (and its seal) from
        ``expected_seq``."""
        res = self.session.execute(
            update(_RUNS).where(_RUNS.c.tenant_id == self.tenant_id, _RUNS.c.id == run_id,
                                _RUNS.c.event_seq == expected_seq, _RUNS.c.lease_owner.is_(None))
            .values(event_seq=event["seq"], event_head=event["hash"], event_seal=seal))
        if not res.rowcount:  # type: ignore[attr-defined]
            raise LeaseLost(f"run {run_id} changed while its decision log was being appended to")
        self.session.execute(insert(_EVENTS), [{**event, "tenant_id": self.tenant_id}])

    def reset_items(self, run_id: str, from_states: Sequence[str]) -> int:
        """Put failed/escalated items back to pending (resume)."""
        res = self.session.execute(
            update(RunItem)
            .where(RunItem.tenant_id == self.tenant_id, RunItem.run_id == run_id, RunItem.state.in_(from_states))
            .values(state="pending", reason=None, failure_category=None)
        )
        return int(res.rowcount)  # type: ignore[attr-defined]

    # ---- tenant suspension (tenants.runs.service.set_tenant_status) ------------------------------
    def hold_all(self, now: datetime) -> Sequence[str]:
        """Suspension: every run no worker holds that is in the queue (queued, handed back between time
        slices, deferred for a backoff) leaves it (state ``suspended``); every other unfinished run is
        flagged ``suspend_requested``: a running one stops at its next step boundary, and one that would
        come back to the queue later (a dead worker's, a decided approval's) is parked instead
        (:func:`back_in_queue`). Returns the runs stopped at once."""
        stopped = self.session.scalars(
            update(Run).where(Run.tenant_id == self.tenant_id, Run.state.in_(("queued", "running")),
                              Run.lease_owner.is_(None))
            .values(state="suspended", runnable_at=None, wake_at=None, updated_at=now, reason=SUSPENDED_REASON,
                    suspend_requested=True).returning(Run.id)).all()
        self.session.execute(update(Run).where(Run.tenant_id == self.tenant_id, Run.state.not_in(TERMINAL_STATES),
                                               Run.suspend_requested.is_(False))
                             .values(suspend_requested=True, updated_at=now))
        return [str(r) for r in stopped]

    def release_held(self, now: datetime, wake_at: datetime) -> Sequence[str]:
        """Resumption: the flags go first (a run parked concurrently is then seen below), then every
        suspended run goes back in the queue where it stopped."""
        self.session.execute(update(Run).where(Run.tenant_id == self.tenant_id, Run.suspend_requested.is_(True))
                             .values(suspend_requested=False))
        return [str(r) for r in self.session.scalars(
            update(Run).where(Run.tenant_id == self.tenant_id, Run.state == "suspended")
            .values(state="queued", runnable_at=now, wake_at=wake_at, updated_at=now, reason=None)
            .returning(Run.id)).all()]

    def pending_items(self, run_id: str, after: int, limit: int) -> Sequence[RunItem]:
        return self.session.scalars(
            select(RunItem)
            .where(RunItem.tenant_id == self.tenant_id, RunItem.run_id == run_id, RunItem.state == "pending",
                   RunItem.item_index > after)
            .order_by(RunItem.item_index).limit(limit)
        ).all()

    def item_outcomes(self, run_id: str) -> dict[str, int]:
        rows = self.session.execute(
            select(RunItem.state, func.count()).where(RunItem.tenant_id == self.tenant_id, RunItem.run_id == run_id)
            .group_by(RunItem.state)
        ).all()
        return {str(state): int(n) for state, n in rows}

    def finish_item(self, run_id: str, item_index: int, state: str, now: datetime, *, reason: str | None = None,
                    category: str | None = None, steps_used: int = 0, llm_calls: int = 0) -> None:
        c = _ITEMS.c
        self.session.execute(
            update(_ITEMS)
            .where(c.tenant_id == self.tenant_id, c.run_id == run_id, c.item_index == item_index)
            .values(state=state, reason=reason, failure_category=category, updated_at=now,
                    steps_used=steps_used, llm_calls=llm_calls)
        )

    def loop_calls(self, run_id: str, item_index: int, step_index: int) -> Sequence[LoopCall]:
        return self.session.scalars(
            select(LoopCall).where(LoopCall.tenant_id == self.tenant_id, LoopCall.run_id == run_id,
                                   LoopCall.item_index == item_index, LoopCall.step_index == step_index)
            .order_by(LoopCall.iteration, LoopCall.call_index)
        ).all()

    # ---- side-effect ledger ----------------------------------------------------------------
    def side_effect(self, key: str) -> SideEffect | None:
        return self.session.scalar(
            select(SideEffect).where(SideEffect.tenant_id == self.tenant_id, SideEffect.idempotency_key == key)
        )

    def update_side_effect(self, key: str, **values: Any) -> None:
        c = _SIDE_EFFECTS.c
        self.session.execute(
            update(_SIDE_EFFECTS).where(c.tenant_id == self.tenant_id, c.idempotency_key == key).values(**values)
        )


class PostgresRunRepository(RunRepository):
    """PostgreSQL: a run with one item is ONE statement (the item is inserted by a CTE gated on the run's
    insert)."""

    def insert_run(self, run: Run, items: Sequence[Any]) -> bool:
        if len(items) != 1:
            return super().insert_run(run, items)
        values = self._run_values(run)
        params = {f"r_{k}": (_json(v) if k == "input" else v) for k, v in values.items()}
        params["item_input"] = _json(items[0])
        sql = _run_with_item_sql(tuple(values), run.idempotency_key is not None)
        return execute_raw(self.session, sql, params) is not None


def run_repository(session: Session, tenant_id: str) -> RunRepository:
    """The tenant's run repository for the session's database (submission differs; everything else is shared)."""
    return for_dialect(session, RunRepository, PostgresRunRepository, tenant_id)


class PlatformRunRepository(PlatformRepository):
    """Cross-tenant queries for the sweeper: it must see every tenant's stranded runs."""

    def renew_leases(self, held: dict[str, int], until: dict[str, datetime]) -> set[str]:
        """Extend each (run, fence) lease to ``until[run]``; return the runs whose fence is no longer current."""
        lost: set[str] = set()
        for run_id, fence in held.items():
            res = self.session.execute(
                update(Run).where(Run.id == run_id, Run.fence == fence, Run.lease_owner.is_not(None))
                .values(lease_until=until[run_id])
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                lost.add(run_id)
        return lost

    def heads(self, *, after: str | None, limit: int) -> list[tuple[str, str, int, str | None, str | None]]:
        """Runs' chain heads in id order: (tenant_id, run_id, seq, hash, seal) — for re-sealing them."""
        q = select(Run.tenant_id, Run.id, Run.event_seq, Run.event_head, Run.event_seal).order_by(Run.id).limit(limit)
        if after is not None:
            q = q.where(Run.id > after)
        return [(str(t), str(r), int(n), h, s) for t, r, n, h, s in self.session.execute(q).all()]

    def reseal(self, run_id: str, *, seq: int, seal: str | None, new_seal: str) -> bool:
        """Replace a head's seal, only if the head is still (seq, seal): a write meanwhile keeps its own."""
        same = Run.event_seal.is_(None) if seal is None else Run.event_seal == seal
        res = self.session.execute(update(Run).where(Run.id == run_id, Run.event_seq == seq, same)
                                   .values(event_seal=new_seal))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def counts_by_state(self) -> dict[str, int]:
        rows = self.session.execute(select(Run.state, func.count()).group_by(Run.state)).all()
        return {str(s): int(n) for s, n in rows}
