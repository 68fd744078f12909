"""All SQL for runs, items, checkpoints, the side-effect ledger, leases and decision events.

Every write the engine makes while it owns a run goes through :meth:`RunRepository.fenced_touch`
first: an UPDATE of the run row guarded by the fencing token. It renews the lease, locks the row
until commit (so a new owner's lease acquisition waits) and tells the caller whether a cancel was
requested. A zombie worker whose fence is stale updates nothing and gets :class:`LeaseLost`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, TextClause, and_, case, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tenants.kit.errors import LeaseLost
from tenants.kit.repository import PlatformRepository, TenantRepository
from tenants.runs.models import DecisionEvent, LoopCall, Run, RunItem, SideEffect, StepCheckpoint

__all__ = ["Lease", "PlatformRunRepository", "RunRepository", "StrandedRun"]

ACTIVE = ("queued", "running")
_EVENT_JSON = frozenset({"considered", "verdicts"})


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


@functools.cache
def _write_step_sql(finish_item: bool, side_effect: bool, durable: bool) -> TextClause:
    """The PostgreSQL one-statement checkpoint: every write is gated on the fenced UPDATE of the run row."""
    ev_cols = ["tenant_id", "run_id", "seq", "kind", "item_index", "step_index", "step_id", "considered", "chosen",
               "why", "verdicts", "failure_category", "cost_usd", "latency_ms", "input_hash", "output_hash",
               "prev_hash", "hash", "created_at"]
    ev_vals = [":tenant_id" if c == "tenant_id" else
               (f"CAST(:e_{c} AS JSONB)" if c in _EVENT_JSON else f":e_{c}") for c in ev_cols]
    sql = f"""
WITH touched AS (
  UPDATE runs SET lease_until = :lease_until, updated_at = :now, steps_done = steps_done + :steps,
         items_done = items_done + :items_done, llm_calls = llm_calls + :llm_calls, cost_usd = cost_usd + :cost
   WHERE tenant_id = :tenant_id AND id = :run_id AND fence = :fence
  RETURNING cancel_requested),
cp AS (
  INSERT INTO step_checkpoints (run_id, item_index, step_index, tenant_id, step_id, status, output, output_hash,
                                attempts, latency_ms, fence, created_at)
  SELECT :run_id, :item_index, :step_index, :tenant_id, :step_id, 'succeeded', CAST(:output AS JSONB),
         :output_hash, :attempts, :latency_ms, :fence, :now FROM touched),
ev AS (
  INSERT INTO decision_events ({", ".join(ev_cols)})
  SELECT {", ".join(ev_vals)} FROM touched)"""  # noqa: S608 - constant column names; every value is bound
    if finish_item:
        sql += """,
fi AS (
  UPDATE run_items SET state = 'done', updated_at = :now, steps_used = :steps_used, llm_calls = :item_llm_calls
   WHERE tenant_id = :tenant_id AND run_id = :run_id AND item_index = :item_index AND EXISTS (SELECT 1 FROM touched))"""
    if side_effect:
        sql += """,
se AS (
  UPDATE side_effects SET state = 'succeeded', outcome = CAST(:se_outcome AS JSONB), completed_at = :now
   WHERE tenant_id = :tenant_id AND idempotency_key = :se_key AND EXISTS (SELECT 1 FROM touched))"""
    if not durable:  # transaction-local: only this step's commit skips the WAL flush wait
        return text(sql + "\nSELECT cancel_requested, set_config('synchronous_commit', 'off', true) FROM touched")
    return text(sql + "\nSELECT cancel_requested FROM touched")
# Tables for the engine's hot path: Core statements skip the ORM's per-statement bookkeeping.
_RUNS: Table = Run.__table__  # type: ignore[assignment]
_ITEMS: Table = RunItem.__table__  # type: ignore[assignment]
_CHECKPOINTS: Table = StepCheckpoint.__table__  # type: ignore[assignment]
_EVENTS: Table = DecisionEvent.__table__  # type: ignore[assignment]
_SIDE_EFFECTS: Table = SideEffect.__table__  # type: ignore[assignment]
ITEM_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Lease:
    fence: int
    crash_count: int  # how many owners vanished without releasing (died or partitioned)


@dataclass(frozen=True, slots=True)
class StrandedRun:
    tenant_id: str
    run_id: str


def _insert_ignore(session: Session, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the session's dialect."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class RunRepository(TenantRepository):
    """A tenant's runs and everything hanging off them."""

    # ---- submission and reads (API) -------------------------------------------------------
    def insert_run(self, run: Run) -> bool:
        """Insert unless (tenant, idempotency_key) exists; True when this call created it."""
        values = {c.key: getattr(run, c.key) for c in Run.__table__.columns if getattr(run, c.key) is not None}
        values["tenant_id"] = self.tenant_id
        stmt = _insert_ignore(self.session, Run).values(**values)
        if run.idempotency_key is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        # RETURNING, not rowcount: an ORM-enabled INSERT reports rowcount -1 on PostgreSQL (psycopg).
        return self.session.execute(stmt.returning(Run.id)).first() is not None

    def insert_items(self, run_id: str, items: Iterable[Any]) -> int:
        """Store batch items in chunks; returns how many."""
        count = 0
        chunk: list[dict[str, Any]] = []
        for item in items:
            chunk.append({"run_id": run_id, "item_index": count, "tenant_id": self.tenant_id, "input": item,
                          "state": "pending", "steps_used": 0, "llm_calls": 0, "next_attempt": 1})
            count += 1
            if len(chunk) >= ITEM_CHUNK:
                self.session.execute(insert(RunItem), chunk)
                chunk = []
        if chunk:
            self.session.execute(insert(RunItem), chunk)
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

    def set_state(self, run_id: str, *, from_states: Sequence[str], **values: Any) -> bool:
        """Change a run's row only if it is in one of ``from_states`` (API-side transitions)."""
        res = self.session.execute(
            update(Run).where(Run.tenant_id == self.tenant_id, Run.id == run_id, Run.state.in_(from_states))
            .values(**values)
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def reset_items(self, run_id: str, from_states: Sequence[str]) -> int:
        """Put failed/escalated items back to pending (resume)."""
        res = self.session.execute(
            update(RunItem)
            .where(RunItem.tenant_id == self.tenant_id, RunItem.run_id == run_id, RunItem.state.in_(from_states))
            .values(state="pending", reason=None, failure_category=None)
        )
        return int(res.rowcount)  # type: ignore[attr-defined]

    # ---- leases (engine) ------------------------------------------------------------------
    def acquire_lease(self, run_id: str, owner: str, now: datetime, lease_s: float) -> Lease | None:
        """Take the run if it is active and unowned (or its owner's lease expired)."""
        res = self.session.execute(
            update(Run)
            .where(
                Run.tenant_id == self.tenant_id,
                Run.id == run_id,
                Run.state.in_(ACTIVE),
                or_(Run.lease_owner.is_(None), Run.lease_until < now),
            )
            .values(
                lease_owner=owner,
                lease_until=now + timedelta(seconds=lease_s),
                fence=Run.fence + 1,
                crash_count=Run.crash_count + case((Run.lease_owner.is_not(None), 1), else_=0),
                state="running",
                reason=None,
                started_at=func.coalesce(Run.started_at, now),
                updated_at=now,
                wake_at=None,
            )
            .returning(Run.fence, Run.crash_count)
        ).first()
        if res is None:
            return None
        return Lease(fence=int(res[0]), crash_count=int(res[1]))

    def fenced_touch(self, run_id: str, fence: int, now: datetime, lease_s: float, *, steps: int = 0,
                     items_done: int = 0, items_failed: int = 0, llm_calls: int = 0,
                     cost_usd: Decimal = Decimal(0)) -> bool:
        """Renew the lease and bump counters if ``fence`` still owns the run; returns cancel_requested.

        Raises LeaseLost when another worker has taken the run. Hot path: a Core statement on
        the table (no ORM bookkeeping), one round trip.
        """
        c = _RUNS.c
        values: dict[str, Any] = {"lease_until": now + timedelta(seconds=lease_s), "updated_at": now}
        if steps:
            values["steps_done"] = c.steps_done + steps
        if items_done:
            values["items_done"] = c.items_done + items_done
        if items_failed:
            values["items_failed"] = c.items_failed + items_failed
        if llm_calls:
            values["llm_calls"] = c.llm_calls + llm_calls
        if cost_usd:
            values["cost_usd"] = c.cost_usd + cost_usd
        row = self.session.execute(
            update(_RUNS).where(c.tenant_id == self.tenant_id, c.id == run_id, c.fence == fence)
            .values(**values).returning(c.cancel_requested)
        ).first()
        if row is None:
            raise LeaseLost(f"run {run_id} is owned by another worker (fence {fence} is stale)")
        return bool(row[0])

    def write_step(self, run_id: str, fence: int, now: datetime, lease_s: float, *, checkpoint: dict[str, Any],
                   event: dict[str, Any], counters: dict[str, Any], finish_item: dict[str, Any] | None = None,
                   side_effect: tuple[str, dict[str, Any]] | None = None, durable: bool = True) -> bool:
        """Checkpoint one step: fence check + lease renewal + counters, the checkpoint, its decision event,
        (the item's end) and (the side effect's outcome), atomically. Returns cancel_requested.

        On PostgreSQL this is ONE statement (data-modifying CTEs all gated on the fenced UPDATE), so a step
        costs one round trip and a commit; elsewhere the same writes run one after the other.

        ``durable=False`` (a pure step: no side effect, no model spend) commits without waiting for the
        WAL flush (``synchronous_commit = off`` for this transaction only). Only a crash of the PostgreSQL
        server itself can lose such a commit, and then the step simply runs again, which is harmless for a
        pure step; any later synchronous commit (a side effect's intent, the run's end) flushes it too.
        """
        if self.dialect != "postgresql":
            cancel = self.fenced_touch(run_id, fence, now, lease_s, steps=counters.get("steps_done", 0),
                                       items_done=counters.get("items_done", 0),
                                       llm_calls=counters.get("llm_calls", 0),
                                       cost_usd=counters.get("cost_usd", Decimal(0)))
            self.add_checkpoint(checkpoint)
            self.add_event(event)
            if finish_item is not None:
                self.finish_item(run_id, **finish_item)
            if side_effect is not None:
                self.update_side_effect(side_effect[0], **side_effect[1])
            return cancel
        params: dict[str, Any] = {
            "tenant_id": self.tenant_id, "run_id": run_id, "fence": fence, "now": now,
            "lease_until": now + timedelta(seconds=lease_s), "steps": counters.get("steps_done", 0),
            "items_done": counters.get("items_done", 0), "llm_calls": counters.get("llm_calls", 0),
            "cost": counters.get("cost_usd", 0), "item_index": checkpoint["item_index"],
            "step_index": checkpoint["step_index"], "step_id": checkpoint["step_id"],
            "output": _json(checkpoint["output"]), "output_hash": checkpoint["output_hash"],
            "attempts": checkpoint["attempts"], "latency_ms": checkpoint["latency_ms"],
        }
        params.update({f"e_{k}": _json(v) if k in _EVENT_JSON else v for k, v in event.items()})
        if finish_item is not None:
            params["steps_used"] = finish_item["steps_used"]
            params["item_llm_calls"] = finish_item["llm_calls"]
        if side_effect is not None:
            params["se_key"] = side_effect[0]
            params["se_outcome"] = _json(side_effect[1].get("outcome"))
        sql = _write_step_sql(finish_item is not None, side_effect is not None, durable)
        row = self.session.execute(sql, params).first()
        if row is None:
            raise LeaseLost(f"run {run_id} is owned by another worker (fence {fence} is stale)")
        return bool(row[0])

    def release(self, run_id: str, fence: int, now: datetime, *, wake_at: datetime | None,
                state: str | None = None, reason: str | None = None, category: str | None = None,
                finished: bool = False) -> bool:
        """Give the lease up (and optionally change state); False if the fence was stale."""
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": now, "wake_at": wake_at}
        if state is not None:
            values["state"] = state
            values["reason"] = reason
            values["failure_category"] = category
        if finished:
            values["finished_at"] = now
        res = self.session.execute(
            update(Run).where(Run.tenant_id == self.tenant_id, Run.id == run_id, Run.fence == fence).values(**values)
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]

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

    def set_item_attempt(self, run_id: str, item_index: int, next_attempt: int) -> None:
        c = _ITEMS.c
        self.session.execute(
            update(_ITEMS).where(c.tenant_id == self.tenant_id, c.run_id == run_id, c.item_index == item_index)
            .values(next_attempt=next_attempt)
        )

    def loop_calls(self, run_id: str, item_index: int, step_index: int) -> Sequence[LoopCall]:
        return self.session.scalars(
            select(LoopCall).where(LoopCall.tenant_id == self.tenant_id, LoopCall.run_id == run_id,
                                   LoopCall.item_index == item_index, LoopCall.step_index == step_index)
            .order_by(LoopCall.iteration)
        ).all()

    def add_loop_call(self, values: dict[str, Any]) -> None:
        values["tenant_id"] = self.tenant_id
        self.session.execute(insert(LoopCall).values(**values))

    def add_checkpoint(self, values: dict[str, Any]) -> None:
        values["tenant_id"] = self.tenant_id
        self.session.execute(insert(_CHECKPOINTS), [values])

    def add_event(self, values: dict[str, Any]) -> None:
        values["tenant_id"] = self.tenant_id
        self.session.execute(insert(_EVENTS), [values])

    def last_event(self, run_id: str) -> tuple[int, str] | None:
        row = self.session.execute(
            select(DecisionEvent.seq, DecisionEvent.hash)
            .where(DecisionEvent.tenant_id == self.tenant_id, DecisionEvent.run_id == run_id)
            .order_by(DecisionEvent.seq.desc()).limit(1)
        ).first()
        return (int(row[0]), str(row[1])) if row else None

    # ---- side-effect ledger ----------------------------------------------------------------
    def side_effect(self, key: str) -> SideEffect | None:
        return self.session.scalar(
            select(SideEffect).where(SideEffect.tenant_id == self.tenant_id, SideEffect.idempotency_key == key)
        )

    def record_intent(self, values: dict[str, Any]) -> None:
        values["tenant_id"] = self.tenant_id
        self.session.execute(insert(SideEffect).values(**values))

    def update_side_effect(self, key: str, **values: Any) -> None:
        c = _SIDE_EFFECTS.c
        self.session.execute(
            update(_SIDE_EFFECTS).where(c.tenant_id == self.tenant_id, c.idempotency_key == key).values(**values)
        )


class PlatformRunRepository(PlatformRepository):
    """Cross-tenant queries for the sweeper: it must see every tenant's stranded runs."""

    def stranded(self, now: datetime, limit: int = 500) -> list[StrandedRun]:
        """Active runs with no live lease whose wake-up is due (lost message, dead worker)."""
        rows = self.session.execute(
            select(Run.tenant_id, Run.id)
            .where(
                Run.state.in_(ACTIVE),
                or_(Run.lease_until.is_(None), Run.lease_until < now),
                or_(Run.wake_at.is_(None), Run.wake_at <= now),
            )
            .order_by(Run.updated_at).limit(limit)
        ).all()
        return [StrandedRun(tenant_id=str(t), run_id=str(r)) for t, r in rows]

    def snooze(self, runs: Sequence[StrandedRun], until: datetime) -> None:
        """Push the next wake-up of re-enqueued runs so the sweeper does not resend every tick."""
        if not runs:
            return
        self.session.execute(
            update(Run).where(Run.id.in_([r.run_id for r in runs])).values(wake_at=until)
        )

    def renew_leases(self, held: dict[str, int], until: datetime) -> set[str]:
        """Extend each (run, fence) lease; return the runs whose fence is no longer current."""
        lost: set[str] = set()
        for run_id, fence in held.items():
            res = self.session.execute(
                update(Run).where(Run.id == run_id, Run.fence == fence).values(lease_until=until)
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                lost.add(run_id)
        return lost

    def counts_by_state(self) -> dict[str, int]:
        rows = self.session.execute(select(Run.state, func.count()).group_by(Run.state)).all()
        return {str(s): int(n) for s, n in rows}
