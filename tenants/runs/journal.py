"""The engine's one writer: every change a worker makes to a run it holds, as ONE fenced write.

A :class:`JournalWrite` says what one commit of the engine does: (on release) give the lease up, bump the
run's counters, append decision events and move the chain head (with its seal), store a checkpoint, end an item,
record a side effect's outcome or an agent loop's model turn or tool call, and on release give the run back to the
queue (or finish it) and correct the tenant's schedule. Everything is gated on the fenced UPDATE of
the run row, so a zombie worker whose fence is stale writes nothing and gets :class:`LeaseLost`.

A step's write does not touch the lease: the worker's lease keeper (``runner.engine._lease``) renews every
held lease each third of its length. ``lease_until`` is indexed (the sweeper finds expired leases by it), so
moving it on every step made every run UPDATE a non-HOT one, with an entry in each of the table's indexes.

Two implementations with one interface (like DBOS's system database):

- :class:`JournalRepository` (SQLite, and any database): the same writes one statement after the other,
  in the caller's transaction;
- :class:`PostgresJournalRepository`: ONE statement of data-modifying CTEs, so a step costs one round
  trip and a commit. ``tests/tenants/runs/test_journal.py`` proves both write the same rows.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, update
from sqlalchemy.orm import Session

from tenants.kit.db import RawStatement, execute_raw, insert_ignore, send_raw
from tenants.kit.errors import LeaseLost
from tenants.kit.repository import TenantRepository, for_dialect
from tenants.runs.models import SUSPENDED_REASON, DecisionEvent, LoopCall, Run, RunItem, SideEffect, StepCheckpoint
from tenants.runs.repository import back_in_queue
from tenants.scheduling.models import AgentSchedule, TenantSchedule

__all__ = ["EVENT_COLUMNS", "Flags", "JournalRepository", "JournalWrite", "PostgresJournalRepository", "Release",
           "journal_repository"]

EVENT_COLUMNS = ("run_id", "seq", "kind", "item_index", "step_index", "step_id", "considered", "chosen", "why",
                 "verdicts", "failure_category", "cost_usd", "latency_ms", "attempts", "input_hash", "output_hash",
                 "prev_hash", "hash", "created_at", "trace_id")
_JSON_EVENT = frozenset({"considered", "verdicts"})
_CHECKPOINT_COLUMNS = ("item_index", "step_index", "step_id", "status", "output", "output_hash", "attempts",
                       "latency_ms", "fence", "created_at", "steps_used", "llm_calls")
_LOOP_COLUMNS = ("item_index", "step_index", "iteration", "call_index", "call_id", "tool", "model", "args", "message",
                 "is_error", "idempotency_key", "cost_usd", "llm_calls", "fence", "created_at")
_INTENT_COLUMNS = ("idempotency_key", "item_index", "step_index", "step_id", "tool", "state", "attempts",
                   "created_at")
_SLICE_EMA = 0.2  # how fast a tenant's expected slice cost follows what slices really cost

_RUNS: Table = Run.__table__  # type: ignore[assignment]
_ITEMS: Table = RunItem.__table__  # type: ignore[assignment]
_SIDE_EFFECTS: Table = SideEffect.__table__  # type: ignore[assignment]
_TENANT_SCHED: Table = TenantSchedule.__table__  # type: ignore[assignment]
_AGENT_SCHED: Table = AgentSchedule.__table__  # type: ignore[assignment]
# Core inserts built once (not the ORM's bulk path): the same rows for a fraction of the CPU, which on SQLite
# is spent holding the write lock.
_EVENTS: Table = DecisionEvent.__table__  # type: ignore[assignment]
_CHECKPOINTS: Table = StepCheckpoint.__table__  # type: ignore[assignment]
_LOOP_CALLS: Table = LoopCall.__table__  # type: ignore[assignment]
_EVENT_INSERT = insert(_EVENTS)
_CHECKPOINT_INSERT = insert(_CHECKPOINTS)
_LOOP_CALL_INSERT = insert(_LOOP_CALLS)
_FLAGS = (_RUNS.c.cancel_requested, _RUNS.c.suspend_requested, _RUNS.c.agent_name)


@functools.lru_cache(maxsize=64)
def _step_update(counters: tuple[str, ...], head: bool) -> Any:
    """A step's run UPDATE (no release) for one shape: fenced, counters added, head moved."""
    c = _RUNS.c
    values: dict[str, Any] = {"updated_at": bindparam("w_now", type_=c.updated_at.type)}
    values.update({name: c[name] + bindparam(f"w_{name}", type_=c[name].type) for name in counters})
    if head:
        values.update({column: bindparam(f"w_{name}", type_=c[column].type) for column, name in
                       (("event_seq", "head_seq"), ("event_head", "head_hash"), ("event_seal", "head_seal"))})
    return (update(_RUNS).where(c.tenant_id == bindparam("w_tenant_id"), c.id == bindparam("w_run_id"),
                                c.fence == bindparam("w_fence"))
            .values(values).returning(*_FLAGS))


@dataclass(slots=True)
class Release:
    """Give the lease up in the same write: the run's new state and where it goes next."""

    state: str | None = None  # None: keep the state (a hand-back between time slices)
    reason: str | None = None
    category: str | None = None
    runnable_at: datetime | None = None  # back in the queue from then on; None: not runnable
    wake_at: datetime | None = None  # when the sweeper re-sends a wake-up nobody answered
    finished: bool = False
    slice_s: float = 0.0  # what this slice really cost, charged to the tenant's virtual time

    @property
    def requeues(self) -> bool:
        """The run goes back in the queue (a hand-back, a deferral): while its tenant is suspended
        (``suspend_requested`` on the row) it is parked as ``suspended`` instead, in the same statement."""
        return self.runnable_at is not None and not self.finished


@dataclass(slots=True)
class JournalWrite:
    """Everything one engine commit changes (see the module docstring). Empty parts are left out."""

    run_id: str
    fence: int
    now: datetime
    steps: int = 0
    items_done: int = 0
    items_failed: int = 0
    llm_calls: int = 0
    cost_usd: Decimal = Decimal(0)
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    item_end: dict[str, Any] | None = None  # item_index, state, reason, category, steps_used, llm_calls
    item_attempt: tuple[int, int] | None = None  # (item_index, next_attempt)
    side_effect: tuple[str, dict[str, Any]] | None = None  # (idempotency key, {state, outcome, completed_at})
    intent: dict[str, Any] | None = None  # a new side-effect intent row, inserted unless its key exists
    loop_call: dict[str, Any] | None = None
    release: Release | None = None
    head_seal: str | None = None  # the seal of the head after this write's events (tenants.audit.seals)

    @property
    def head(self) -> tuple[int, str] | None:
        """The chain head after this write's events."""
        return (int(self.events[-1]["seq"]), str(self.events[-1]["hash"])) if self.events else None


@dataclass(frozen=True, slots=True)
class Flags:
    """What the run row asked of its worker, read in the same write."""

    cancel_requested: bool
    suspend_requested: bool
    intent_recorded: bool = False  # the write's intent row was new (False: its key already existed)


_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def _json(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


class JournalRepository(TenantRepository):
    """The journal's writes one after the other (SQLite; correct on any database)."""

    def write(self, w: JournalWrite, *, durable: bool = True) -> Flags:
        """Apply ``w`` in the caller's transaction; raise LeaseLost if ``w.fence`` no longer owns the run.

        ``durable=False`` lets the commit skip the WAL flush wait where the database supports it (PostgreSQL;
        SQLite in WAL mode with ``synchronous=NORMAL`` never waits for an fsync per commit anyway)."""
        c = _RUNS.c
        fenced = {"w_tenant_id": self.tenant_id, "w_run_id": w.run_id, "w_fence": w.fence}
        if w.release is None:  # a step: one statement object per shape, values as parameters (compiled once)
            added = [(name, amount) for name, amount in self._counters(w) if amount]
            params = {**fenced, "w_now": w.now,
                      **{f"w_{name}": amount for name, amount in added}}
            if w.head is not None:
                params["w_head_seq"], params["w_head_hash"] = w.head
                params["w_head_seal"] = w.head_seal
            statement = _step_update(tuple(name for name, _ in added), w.head is not None)
            row = self.session.execute(statement, params).first()
        else:
            row = self.session.execute(
                update(_RUNS).where(c.tenant_id == self.tenant_id, c.id == w.run_id, c.fence == w.fence)
                .values(**self._run_values(w)).returning(*_FLAGS)).first()
        if row is None:
            raise LeaseLost(f"run {w.run_id} is owned by another worker (fence {w.fence} is stale)")
        if w.events:
            self.session.execute(_EVENT_INSERT, [{**e, "tenant_id": self.tenant_id} for e in w.events])
        if w.checkpoint is not None:
            self.session.execute(_CHECKPOINT_INSERT, [{**w.checkpoint, "run_id": w.run_id,
                                                       "tenant_id": self.tenant_id}])
        if w.item_end is not None or w.item_attempt is not None:
            self._items(w)
        if w.side_effect is not None:
            se = _SIDE_EFFECTS.c
            self.session.execute(update(_SIDE_EFFECTS).where(se.tenant_id == self.tenant_id,
                                                             se.idempotency_key == w.side_effect[0])
                                 .values(**w.side_effect[1]))
        if w.loop_call is not None:
            self.session.execute(_LOOP_CALL_INSERT, [{**w.loop_call, "run_id": w.run_id,
                                                      "tenant_id": self.tenant_id}])
        recorded = False
        if w.intent is not None:
            recorded = self.session.execute(
                insert_ignore(self.session, SideEffect, "idempotency_key")
                .values(**w.intent, run_id=w.run_id, tenant_id=self.tenant_id).returning(SideEffect.idempotency_key)
            ).first() is not None
        if w.release is not None:
            self._release_schedule(str(row[2]), w.release.slice_s)
        return Flags(bool(row[0]), bool(row[1]), recorded)

    def send(self, w: JournalWrite, *, durable: bool = True) -> Callable[[], Flags]:
        """Send ``w`` without waiting for it where the database allows (PostgreSQL, on an autocommitted
        connection: the server commits it while the caller goes on); the returned function waits for it and
        gives its flags (or raises LeaseLost). Nothing else may use the session before that. Here: written now."""
        flags = self.write(w, durable=durable)
        return lambda: flags

    @staticmethod
    def _counters(w: JournalWrite) -> tuple[tuple[str, Any], ...]:
        return (("steps_done", w.steps), ("items_done", w.items_done), ("items_failed", w.items_failed),
                ("llm_calls", w.llm_calls), ("cost_usd", w.cost_usd))

    def _run_values(self, w: JournalWrite) -> dict[str, Any]:
        c = _RUNS.c
        values: dict[str, Any] = {"updated_at": w.now}
        for name, amount in self._counters(w):
            if amount:
                values[name] = c[name] + amount
        if w.head is not None:
            values["event_seq"], values["event_head"] = w.head
            values["event_seal"] = w.head_seal
        r = w.release
        if r is None:
            return values
        values.update(lease_owner=None, lease_until=None, runnable_at=r.runnable_at, wake_at=r.wake_at)
        if r.state is not None:
            values.update(state=r.state, reason=r.reason, failure_category=r.category)
        if r.requeues and r.runnable_at is not None:  # back in the queue, or parked while the tenant is suspended
            values.update(back_in_queue(r.runnable_at, r.wake_at, state=r.state, reason=r.reason))
        if r.finished:
            values["finished_at"] = w.now
        return values

    def _items(self, w: JournalWrite) -> None:
        i = _ITEMS.c
        if w.item_end is not None:
            end = w.item_end
            self.session.execute(
                update(_ITEMS).where(i.tenant_id == self.tenant_id, i.run_id == w.run_id,
                                     i.item_index == end["item_index"])
                .values(state=end["state"], reason=end.get("reason"), failure_category=end.get("category"),
                        updated_at=w.now, steps_used=end["steps_used"], llm_calls=end["llm_calls"]))
        if w.item_attempt is not None:
            self.session.execute(
                update(_ITEMS).where(i.tenant_id == self.tenant_id, i.run_id == w.run_id,
                                     i.item_index == w.item_attempt[0]).values(next_attempt=w.item_attempt[1]))

    def _release_schedule(self, agent: str, slice_s: float) -> None:
        """running - 1 for the tenant and the agent; the tenant's virtual time corrected by the slice's real cost."""
        t, a = _TENANT_SCHED.c, _AGENT_SCHED.c
        self.session.execute(update(_TENANT_SCHED).where(t.tenant_id == self.tenant_id).values(
            running=func.max(t.running - 1, 0), vtime=t.vtime + (slice_s - t.avg_slice_s) / t.weight,
            avg_slice_s=t.avg_slice_s * (1 - _SLICE_EMA) + slice_s * _SLICE_EMA))
        self.session.execute(update(_AGENT_SCHED).where(a.tenant_id == self.tenant_id, a.agent_name == agent)
                             .values(running=func.max(a.running - 1, 0)))


def _run_update(counters: tuple[str, ...], head: bool, release: bool, release_state: bool, finished: bool,
                requeue: bool) -> str:
    sets = ["updated_at = :now", *(f"{name} = {name} + :{name}" for name in counters)]
    if head:
        sets += ["event_seq = :head_seq", "event_head = :head_hash", "event_seal = :head_seal"]
    if release and requeue:  # back in the queue, or parked while the tenant is suspended (Release.requeues)
        def parked(then: str, otherwise: str) -> str:
            return f"CASE WHEN suspend_requested THEN {then} ELSE {otherwise} END"

        sets += ["lease_owner = NULL", "lease_until = NULL",
                 f"runnable_at = {parked('NULL', 'CAST(:rel_runnable_at AS TIMESTAMPTZ)')}",
                 f"wake_at = {parked('NULL', 'CAST(:rel_wake_at AS TIMESTAMPTZ)')}",
                 f"state = {parked(repr('suspended'), ':rel_state' if release_state else 'state')}",
                 f"reason = {parked(repr(SUSPENDED_REASON), ':rel_reason' if release_state else 'reason')}"]
        if release_state:
            sets.append("failure_category = :rel_category")
    elif release:
        sets += ["lease_owner = NULL", "lease_until = NULL", "runnable_at = :rel_runnable_at",
                 "wake_at = :rel_wake_at"]
        if release_state:
            sets += ["state = :rel_state", "reason = :rel_reason", "failure_category = :rel_category"]
        if finished:
            sets.append("finished_at = :now")
    return f"""touched AS (
  UPDATE runs SET {", ".join(sets)}
   WHERE tenant_id = :tenant_id AND id = :run_id AND fence = :fence
  RETURNING cancel_requested, suspend_requested, agent_name)"""


def _inserts(n_events: int, checkpoint: bool, loop_call: bool) -> list[str]:
    parts = [_insert(f"ev{n}", "decision_events", ("tenant_id",), EVENT_COLUMNS, f"e{n}", _JSON_EVENT)
             for n in range(n_events)]
    if checkpoint:
        parts.append(_insert("cp", "step_checkpoints", ("run_id", "tenant_id"), _CHECKPOINT_COLUMNS, "cp",
                             {"output"}))
    if loop_call:
        parts.append(_insert("lc", "loop_calls", ("run_id", "tenant_id"), _LOOP_COLUMNS, "lc", {"args"}))
    return parts


def _insert(name: str, table: str, keys: Sequence[str], columns: Sequence[str], prefix: str,
            json_columns: Collection[str]) -> str:
    """A CTE inserting one row into ``table`` when the fenced run update touched the run: ``keys`` bound
    as themselves, ``columns`` as ``:{prefix}_{column}`` (JSON ones cast)."""
    values = ", ".join(f"CAST(:{prefix}_{col} AS JSONB)" if col in json_columns else f":{prefix}_{col}"
                       for col in columns)
    return f"""{name} AS (
  INSERT INTO {table} ({", ".join((*keys, *columns))})
  SELECT {", ".join(":" + key for key in keys)}, {values} FROM touched)"""


def _updates(item_end: bool, item_attempt: bool, side_effect: bool, release: bool) -> list[str]:
    gate = "EXISTS (SELECT 1 FROM touched)"
    parts = []
    # A row must not be updated twice in one statement (PostgreSQL applies only one of the updates), so an
    # item's end and its attempt number, when they concern the same item, are one UPDATE.
    if item_end:
        attempt = (", next_attempt = CASE WHEN item_index = :ia_item_index THEN :ia_next ELSE next_attempt END"
                   if item_attempt else "")
        parts.append(f"""ie AS (
  UPDATE run_items SET state = :ie_state, reason = :ie_reason, failure_category = :ie_category, updated_at = :now,
         steps_used = :ie_steps_used, llm_calls = :ie_llm_calls{attempt}
   WHERE tenant_id = :tenant_id AND run_id = :run_id AND item_index = :ie_item_index AND {gate})""")
    if item_attempt:
        other = " AND item_index <> :ie_item_index" if item_end else ""
        parts.append(f"""ia AS (
  UPDATE run_items SET next_attempt = :ia_next
   WHERE tenant_id = :tenant_id AND run_id = :run_id AND item_index = :ia_item_index{other} AND {gate})""")
    if side_effect:
        parts.append(f"""se AS (
  UPDATE side_effects SET state = :se_state, outcome = CAST(:se_outcome AS JSONB), completed_at = :se_completed_at
   WHERE tenant_id = :tenant_id AND idempotency_key = :se_key AND {gate})""")
    if release:  # running - 1; the tenant's virtual time corrected by what the slice really cost
        # Lock order: the tenant's schedule row before the agent's, as the claim takes them. PostgreSQL runs
        # unreferenced data-modifying CTEs in no promised order, so ``ag`` reads ``ts`` to come after it
        # (without that, a finishing run and a claim of the same tenant deadlocked under load).
        parts.append(f"""ts AS (
  UPDATE tenant_schedules SET running = GREATEST(running - 1, 0),
         vtime = vtime + (:rel_slice_s - avg_slice_s) / weight,
         avg_slice_s = avg_slice_s * {1 - _SLICE_EMA} + :rel_slice_s * {_SLICE_EMA}
   WHERE tenant_id = :tenant_id AND {gate}
  RETURNING 1)""")
        parts.append("""ag AS (
  UPDATE agent_schedules SET running = GREATEST(running - 1, 0)
   WHERE tenant_id = :tenant_id AND agent_name = (SELECT agent_name FROM touched)
     AND (SELECT count(*) FROM ts) >= 0)""")
    return parts


@functools.cache
def _write_sql(shape: tuple[Any, ...]) -> RawStatement:
    """The one-statement write for a shape of :class:`JournalWrite` (which parts are present)."""
    (counters, n_events, head, checkpoint, item_end, item_attempt, side_effect, loop_call, intent, release,
     release_state, finished, requeue, durable) = shape
    parts = [_run_update(counters, head, release, release_state, finished, requeue),
             *_inserts(n_events, checkpoint, loop_call),
             *_updates(item_end, item_attempt, side_effect, release)]
    select_ = "SELECT cancel_requested, suspend_requested"
    if intent:
        parts.append(f"""it AS (
  INSERT INTO side_effects (run_id, tenant_id, {", ".join(_INTENT_COLUMNS)})
  SELECT :run_id, :tenant_id, {", ".join(f":in_{col}" for col in _INTENT_COLUMNS)} FROM touched
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1)""")
        select_ += ", EXISTS (SELECT 1 FROM it)"
    else:
        select_ += ", false"
    if not durable:  # transaction-local: only this commit skips the WAL flush wait
        select_ += ", set_config('synchronous_commit', 'off', true)"
    return RawStatement.of("WITH " + ",\n".join(parts) + f"\n{select_} FROM touched")


class PostgresJournalRepository(JournalRepository):
    """PostgreSQL: the whole write is one statement (data-modifying CTEs gated on the fenced UPDATE)."""

    def write(self, w: JournalWrite, *, durable: bool = True) -> Flags:
        return _flags(w, execute_raw(self.session, *self._statement(w, durable)))

    def send(self, w: JournalWrite, *, durable: bool = True) -> Callable[[], Flags]:
        sent = send_raw(self.session, *self._statement(w, durable))
        return lambda: _flags(w, sent.row())

    def _statement(self, w: JournalWrite, durable: bool) -> tuple[RawStatement, dict[str, Any]]:
        counters = tuple(name for name, amount in self._counters(w) if amount)
        r = w.release
        shape = (counters, len(w.events), w.head is not None, w.checkpoint is not None, w.item_end is not None,
                 w.item_attempt is not None, w.side_effect is not None, w.loop_call is not None,
                 w.intent is not None, r is not None,
                 r is not None and r.state is not None, r is not None and r.finished, r is not None and r.requeues,
                 durable)
        params: dict[str, Any] = {"tenant_id": self.tenant_id, "run_id": w.run_id, "fence": w.fence, "now": w.now,
                                  "steps_done": w.steps, "items_done": w.items_done,
                                  "items_failed": w.items_failed, "llm_calls": w.llm_calls, "cost_usd": w.cost_usd}
        if w.head is not None:
            params["head_seq"], params["head_hash"] = w.head
            params["head_seal"] = w.head_seal
        for n, event in enumerate(w.events):
            params.update({f"e{n}_{col}": _json(event.get(col)) if col in _JSON_EVENT else event.get(col)
                           for col in EVENT_COLUMNS})
        if w.checkpoint is not None:
            params.update({f"cp_{col}": w.checkpoint.get(col) for col in _CHECKPOINT_COLUMNS})
            params["cp_output"] = _json(w.checkpoint.get("output"))
        if w.item_end is not None:
            end = w.item_end
            params.update(ie_state=end["state"], ie_reason=end.get("reason"), ie_category=end.get("category"),
                          ie_steps_used=end["steps_used"], ie_llm_calls=end["llm_calls"],
                          ie_item_index=end["item_index"])
        if w.item_attempt is not None:
            params["ia_item_index"], params["ia_next"] = w.item_attempt
        if w.side_effect is not None:
            key, se = w.side_effect
            params.update(se_key=key, se_state=se["state"], se_outcome=_json(se.get("outcome")),
                          se_completed_at=se.get("completed_at"))
        if w.loop_call is not None:
            params.update({f"lc_{col}": w.loop_call.get(col) for col in _LOOP_COLUMNS})
            params["lc_args"] = _json(w.loop_call.get("args"))
            params["lc_is_error"] = bool(w.loop_call.get("is_error"))
            params["lc_cost_usd"] = w.loop_call.get("cost_usd") or Decimal(0)
            params["lc_llm_calls"] = int(w.loop_call.get("llm_calls") or 0)
        if w.intent is not None:
            params.update({f"in_{col}": w.intent[col] for col in _INTENT_COLUMNS})
        if r is not None:
            params.update(rel_runnable_at=r.runnable_at, rel_wake_at=r.wake_at, rel_state=r.state,
                          rel_reason=r.reason, rel_category=r.category, rel_slice_s=float(r.slice_s))
        return _write_sql(shape), params


def _flags(w: JournalWrite, row: tuple[Any, ...] | None) -> Flags:
    if row is None:
        raise LeaseLost(f"run {w.run_id} is owned by another worker (fence {w.fence} is stale)")
    return Flags(bool(row[0]), bool(row[1]), bool(row[2]))


def journal_repository(session: Session, tenant_id: str) -> JournalRepository:
    """The journal repository for the session's database."""
    return for_dialect(session, JournalRepository, PostgresJournalRepository, tenant_id)
