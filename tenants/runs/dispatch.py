"""All SQL for dispatch: the fair claim, and the sweeper's recoveries (weights and caps are
tenants.scheduling's; this module reads and moves their counters).

The claim is the scheduler's one decision: among the (tenant, agent) queues with a due runnable run,
take the tenant with the lowest virtual time (never below the lowest of the tenants with work, so an
idle tenant cannot bank credit) whose running count is under its cap, then that tenant's most urgent
run (priority, then time in queue) of an agent under its cap. On PostgreSQL it is ONE statement,
committed on its own (autocommit, one round trip): a loose index scan finds the queues, ``FOR UPDATE
SKIP LOCKED`` lets concurrent workers take different runs, the tenant's and the agent's schedule rows
are locked and their caps checked on the locked rows (so caps hold exactly), and only then are both
counted, so the statement never counts a run half-way. The schedule rows are locked only for the
statement, never across a round trip to the worker (a worker thread waiting for the GIL while holding
its tenant's row made every other claim and release of that tenant queue behind it).
SQLite serialises writers, so there the same decision is a few plain statements inside the caller's
``BEGIN IMMEDIATE`` transaction (:attr:`DispatchRepository.one_statement` is False).

The release side (running - 1, the virtual time corrected by the slice's real cost) is written by
the engine's journal in the same statement that releases the lease (tenants.runs.journal).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, bindparam, case, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from tenants.accounts.models import Tenant
from tenants.kit.db import RawStatement, execute_raw, insert_ignore, upsert
from tenants.kit.repository import PlatformRepository, for_dialect
from tenants.runs.models import Run
from tenants.runs.repository import back_in_queue
from tenants.scheduling.models import DEFAULT_SLICE_S, AgentSchedule, TenantSchedule

__all__ = [
    "ClaimedRun",
    "DispatchRepository",
    "PostgresDispatchRepository",
    "QueueFigures",
    "WokenRun",
    "dispatch_repository",
]

_RUNS: Table = Run.__table__  # type: ignore[assignment]
_CLAIMED_COLUMNS = ("id", "tenant_id", "agent_name", "agent_version_id", "agent_version", "input", "is_batch",
                    "items_total", "items_done", "items_failed", "cost_usd", "fence", "crash_count",
                    "event_seq", "event_head", "event_seal", "started_at", "created_at", "priority")


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run a worker now holds the lease of, with what the engine needs to start working on it."""

    id: str
    tenant_id: str
    agent_name: str
    agent_version_id: str
    agent_version: int
    input: Any
    is_batch: bool
    items_total: int
    items_done: int
    items_failed: int
    cost_usd: Decimal
    fence: int
    crash_count: int
    event_seq: int
    event_head: str | None
    event_seal: str | None
    started_at: datetime
    created_at: datetime
    priority: int

    @classmethod
    def of(cls, row: Any) -> ClaimedRun:
        values = dict(zip(_CLAIMED_COLUMNS, row, strict=True))
        values["cost_usd"] = Decimal(values["cost_usd"] or 0)
        values["is_batch"] = bool(values["is_batch"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class WokenRun:
    tenant_id: str
    run_id: str


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One tenant's dispatch figures: runs waiting (due now), the oldest wait, runs holding a lease.

    ``queued`` counts every due runnable run (``runnable_at <= now``); ``capped`` is the part of it that a
    ``concurrent_runs`` cap reached right now holds back (the tenant's, or its agent's), the rest starts as
    soon as a worker is free. ``oldest_runnable_at`` is the earliest ``runnable_at`` among them: when the
    longest-waiting run became runnable (submitted, handed back between slices, or due after a back-off).
    """

    tenant_id: str
    queued: int
    oldest_runnable_at: datetime | None
    running: int
    weight: int
    cap: int | None
    capped: int = 0


def _choose_sql() -> str:
    """The claim's decision: the due queues (a loose index scan), each queue's head, the lowest virtual time,
    the fairest queue under its caps, and its most urgent run, locked (``FOR UPDATE SKIP LOCKED``)."""
    return """
WITH RECURSIVE queues(tid, agent) AS (
    (SELECT tenant_id, agent_name FROM runs WHERE runnable_at IS NOT NULL ORDER BY tenant_id, agent_name LIMIT 1)
  UNION ALL
    SELECT nxt.tenant_id, nxt.agent_name FROM queues q
      CROSS JOIN LATERAL (SELECT r.tenant_id, r.agent_name FROM runs r
                           WHERE r.runnable_at IS NOT NULL AND (r.tenant_id, r.agent_name) > (q.tid, q.agent)
                           ORDER BY r.tenant_id, r.agent_name LIMIT 1) nxt
),
heads AS (
  SELECT q.tid, q.agent, h.id, h.priority, h.runnable_at FROM queues q
    CROSS JOIN LATERAL (SELECT r.id, r.priority, r.runnable_at FROM runs r
                         WHERE r.tenant_id = q.tid AND r.agent_name = q.agent AND r.runnable_at IS NOT NULL
                           AND r.runnable_at <= :now
                         ORDER BY r.priority, r.runnable_at, r.id LIMIT 1) h
),
vt AS (SELECT COALESCE(MIN(COALESCE(s.vtime, 0)), 0) AS v,
              set_config('synchronous_commit', 'off', true) AS relaxed  -- a lost claim is simply claimed again
         FROM (SELECT DISTINCT tid FROM heads) a LEFT JOIN tenant_schedules s ON s.tenant_id = a.tid),
choice AS (
  SELECT h.tid, h.agent FROM heads h
    JOIN tenants t ON t.id = h.tid AND t.status = 'active'
    LEFT JOIN tenant_schedules s ON s.tenant_id = h.tid
    LEFT JOIN agent_schedules g ON g.tenant_id = h.tid AND g.agent_name = h.agent
   WHERE (s.cap IS NULL OR s.running < s.cap) AND (g.cap IS NULL OR g.running < g.cap)
   ORDER BY GREATEST(COALESCE(s.vtime, 0), (SELECT v FROM vt)), h.tid, h.priority, h.runnable_at, h.id
   LIMIT 1
),
target AS (  -- lateral: the chosen queue's own index range, in index order (never a scan and sort of the tenant)
  SELECT t.id FROM choice c
    CROSS JOIN LATERAL (SELECT r.id FROM runs r
                         WHERE r.tenant_id = c.tid AND r.agent_name = c.agent AND r.runnable_at IS NOT NULL
                           AND r.runnable_at <= :now
                         ORDER BY r.priority, r.runnable_at, r.id
                         LIMIT 1 FOR UPDATE OF r SKIP LOCKED) t
)"""


def _count_sql() -> str:
    """The claim's counting: the schedule rows locked, the caps checked on them, then both counted."""
    return f"""
lt AS (  -- the schedule rows, locked (their latest versions) once a run is held: the tenant's before the agent's,
         -- the order the journal's release takes them in; the caps are checked on these locked rows
  SELECT s.cap, s.running FROM tenant_schedules s, choice c
   WHERE s.tenant_id = c.tid AND EXISTS (SELECT 1 FROM target)
   FOR UPDATE OF s
),
la AS (
  SELECT g.cap, g.running FROM agent_schedules g, choice c
   WHERE g.tenant_id = c.tid AND g.agent_name = c.agent AND (SELECT count(*) FROM lt) >= 0
   FOR UPDATE OF g
),
allowed AS (
  SELECT 1 FROM target
   WHERE NOT EXISTS (SELECT 1 FROM lt WHERE lt.cap IS NOT NULL AND lt.running >= lt.cap)
     AND NOT EXISTS (SELECT 1 FROM la WHERE la.cap IS NOT NULL AND la.running >= la.cap)
),
ts AS (
  INSERT INTO tenant_schedules AS s (tenant_id, weight, vtime, avg_slice_s, running, updated_at)
  SELECT c.tid, 1, (SELECT v FROM vt) + {DEFAULT_SLICE_S}, {DEFAULT_SLICE_S}, 1, :now
    FROM choice c WHERE EXISTS (SELECT 1 FROM allowed)
  ON CONFLICT (tenant_id) DO UPDATE
     SET vtime = GREATEST(s.vtime, (SELECT v FROM vt)) + s.avg_slice_s / s.weight,
         running = s.running + 1, updated_at = :now
  RETURNING s.tenant_id
),
ag AS (
  INSERT INTO agent_schedules AS g (tenant_id, agent_name, running)
  SELECT c.tid, c.agent, 1 FROM choice c WHERE EXISTS (SELECT 1 FROM ts)
  ON CONFLICT (tenant_id, agent_name) DO UPDATE SET running = g.running + 1
  RETURNING g.tenant_id
)"""


@functools.cache
def _claim_sql() -> RawStatement:
    columns = ", ".join(f"r.{c}" for c in _CLAIMED_COLUMNS)
    return RawStatement.of(_choose_sql() + ",\n" + _count_sql() + f"""
UPDATE runs r SET lease_owner = :owner, lease_until = :lease_until, fence = r.fence + 1, runnable_at = NULL,
       state = 'running', reason = NULL, started_at = COALESCE(r.started_at, :now), updated_at = :now,
       wake_at = NULL
  FROM target WHERE r.id = target.id AND EXISTS (SELECT 1 FROM ag)
RETURNING {columns}""")


class DispatchRepository(PlatformRepository):
    """Cross-tenant by nature: the claim chooses the tenant. The generic (SQLite) implementation runs the
    decision as plain statements; it relies on the caller's transaction serialising writers."""

    one_statement = False  # whether the claim is one statement that needs no transaction around it

    def claim(self, owner: str, now: datetime, lease_s: float) -> ClaimedRun | None:
        """Take the fairest due runnable run and its lease; None when nothing may run now. On None the
        caller must roll back (a schedule row may have been counted before a cap said no)."""
        q = _claim_statements(self.session.get_bind().dialect.name)
        queues = self._queues(q)
        if not queues:
            return None
        tenants = sorted({tenant_id for tenant_id, _ in queues})
        active = set(self.session.scalars(q.active, {"tenants": tenants}))
        # Core rows, never ORM objects: the worker's session lives across claims and must not cache counts
        sched = {r.tenant_id: r for r in self.session.execute(q.schedules, {"tenants": tenants})}
        agents = {(r.tenant_id, r.agent_name): r for r in self.session.execute(q.agents, {"tenants": tenants})}
        heads = []
        for tenant_id, agent in queues:
            head = self.session.execute(q.head, {"tenant": tenant_id, "agent": agent, "now": now}).first()
            if head is not None:
                heads.append((tenant_id, agent, *head))
        vt = min((sched[x].vtime if x in sched else 0.0) for x in {h[0] for h in heads}) if heads else 0.0
        best: tuple[Any, ...] | None = None
        for tenant_id, agent, run_id, priority, runnable_at in heads:
            s, a = sched.get(tenant_id), agents.get((tenant_id, agent))
            if tenant_id not in active or (s is not None and s.cap is not None and s.running >= s.cap) or (
                    a is not None and a.cap is not None and a.running >= a.cap):
                continue
            key = (max(s.vtime if s is not None else 0.0, vt), tenant_id, priority, runnable_at, run_id)
            if best is None or key < best[0]:
                best = (key, tenant_id, agent, run_id)
        if best is None:
            return None
        _, tenant_id, agent, run_id = best
        s = sched.get(tenant_id)
        if s is None:
            self.session.execute(q.new_schedule, {"tenant": tenant_id, "vtime": vt + DEFAULT_SLICE_S, "now": now})
        else:
            self.session.execute(q.charge_schedule, {"tenant": tenant_id, "vtime": max(s.vtime, vt) + s.avg_slice_s
                                                     / s.weight, "now": now})
        self.session.execute(q.agent_running, {"tenant": tenant_id, "agent": agent})
        row = self.session.execute(q.take, {"run": run_id, "owner": owner, "now": now,
                                            "lease_until": now + timedelta(seconds=lease_s)}).first()
        return None if row is None else ClaimedRun.of(row)

    def _queues(self, q: _ClaimStatements) -> list[tuple[str, str]]:
        """Every (tenant, agent) with a runnable run: a loose index scan, one seek per queue."""
        out: list[tuple[str, str]] = []
        row = self.session.execute(q.first_queue).first()
        while row is not None:
            out.append((str(row[0]), str(row[1])))
            row = self.session.execute(q.next_queue, {"tenant": out[-1][0], "agent": out[-1][1]}).first()
        return out

    # ---- the sweeper --------------------------------------------------------------------------
    def recover_expired(self, now: datetime, wake_at: datetime, limit: int = 500) -> list[WokenRun]:
        """Runs whose owner stopped renewing its lease (dead worker): back in the queue, fenced off (the
        old owner's writes now fail), counted as one more crash, no longer counted as running."""
        rows = self.session.execute(
            update(Run).where(Run.id.in_(
                select(Run.id).where(Run.state.in_(("queued", "running")), Run.lease_owner.is_not(None),
                                     Run.lease_until < now).limit(limit).scalar_subquery()))
            .values(lease_owner=None, lease_until=None, fence=Run.fence + 1, crash_count=Run.crash_count + 1,
                    updated_at=now, **back_in_queue(now, wake_at, state=None))
            .returning(Run.tenant_id, Run.id, Run.agent_name)).all()
        for tenant_id, _run_id, agent in rows:
            self._release_counts(str(tenant_id), str(agent))
        return [WokenRun(str(t), str(r)) for t, r, _ in rows]

    def _release_counts(self, tenant_id: str, agent: str) -> None:
        self.session.execute(update(TenantSchedule).where(TenantSchedule.tenant_id == tenant_id)
                             .values(running=_decremented(TenantSchedule.running)))
        self.session.execute(update(AgentSchedule)
                             .where(AgentSchedule.tenant_id == tenant_id, AgentSchedule.agent_name == agent)
                             .values(running=_decremented(AgentSchedule.running)))

    def overdue(self, now: datetime, wake_at: datetime, limit: int = 500) -> list[WokenRun]:
        """Runnable runs nobody claimed within the wake grace (a lost wake-up): wake them again, and push
        their next re-send so the sweeper does not repeat itself every tick. Runs of a tenant at its cap or
        suspended are left alone: a released slot or the resumption wakes them, never a busy re-send."""
        blocked = (select(TenantSchedule.tenant_id)
                   .where(TenantSchedule.cap.is_not(None), TenantSchedule.running >= TenantSchedule.cap)
                   .union(select(Tenant.id).where(Tenant.status != "active")))
        rows = self.session.execute(
            update(Run).where(Run.id.in_(
                select(Run.id).where(Run.runnable_at.is_not(None), Run.runnable_at <= now,
                                     Run.wake_at.is_not(None), Run.wake_at <= now,
                                     Run.tenant_id.not_in(blocked)).limit(limit).scalar_subquery()))
            .values(wake_at=wake_at).returning(Run.tenant_id, Run.id)).all()
        return [WokenRun(str(t), str(r)) for t, r in rows]

    def queue_figures(self, now: datetime) -> list[QueueFigures]:
        """Per tenant with work or a schedule row: due runnable runs (and how many of them a cap holds), the
        oldest, running count, weight, cap. The queue is read per (tenant, agent) through the partial index
        ``ix_runs_runnable`` (runnable runs only: the queue's size, never the runs history); caps from the
        schedule rows."""
        per_agent = self.session.execute(
            select(Run.tenant_id, Run.agent_name, func.count(), func.min(Run.runnable_at))
            .where(Run.runnable_at.is_not(None), Run.runnable_at <= now)
            .group_by(Run.tenant_id, Run.agent_name)).all()
        g = AgentSchedule.__table__.c
        agent_full = {(str(t), str(a)) for t, a in self.session.execute(
            select(g.tenant_id, g.agent_name).where(g.cap.is_not(None), g.running >= g.cap)).all()}
        schedules = {row.tenant_id: row for row in self.session.scalars(select(TenantSchedule))}
        full = {t for t, row in schedules.items() if row.cap is not None and row.running >= row.cap}
        waiting: dict[str, tuple[int, datetime | None, int]] = {}
        for tenant_id, agent, n, oldest in per_agent:
            t, count = str(tenant_id), int(n)
            held = t in full or (t, str(agent)) in agent_full
            total, first, capped = waiting.get(t, (0, oldest, 0))
            waiting[t] = (total + count, oldest if first is None or (oldest is not None and oldest < first) else first,
                          capped + (count if held else 0))
        out = []
        for row in schedules.values():
            n, first, capped = waiting.pop(row.tenant_id, (0, None, 0))
            out.append(QueueFigures(row.tenant_id, n, first, row.running, row.weight, row.cap, capped))
        out += [QueueFigures(t, n, first, 0, 1, None, capped) for t, (n, first, capped) in waiting.items()]
        return out


class PostgresDispatchRepository(DispatchRepository):
    """PostgreSQL: the claim is one statement (see the module docstring)."""

    one_statement = True

    def claim(self, owner: str, now: datetime, lease_s: float) -> ClaimedRun | None:
        row = execute_raw(self.session, _claim_sql(),
                          {"owner": owner, "now": now, "lease_until": now + timedelta(seconds=lease_s)})
        return None if row is None else ClaimedRun.of(row)

    def _release_counts(self, tenant_id: str, agent: str) -> None:
        # the tenant's row before the agent's, as the claim and the journal lock them (``t`` is read first)
        self.session.execute(text(
            "WITH t AS (UPDATE tenant_schedules SET running = GREATEST(running - 1, 0) WHERE tenant_id = :t "
            "RETURNING 1) "
            "UPDATE agent_schedules SET running = GREATEST(running - 1, 0) WHERE tenant_id = :t AND agent_name = :a "
            "AND (SELECT count(*) FROM t) >= 0"),
            {"t": tenant_id, "a": agent})


@dataclass(frozen=True, slots=True)
class _ClaimStatements:
    first_queue: Any
    next_queue: Any
    active: Any
    schedules: Any
    agents: Any
    head: Any
    new_schedule: Any
    charge_schedule: Any
    agent_running: Any
    take: Any


@functools.cache
def _claim_statements(dialect: str) -> _ClaimStatements:
    """The generic claim's statements, built once per dialect with their values as parameters: SQLAlchemy
    compiles each once instead of building, keying and compiling it on every claim (on SQLite the claim
    holds the write lock the whole time)."""
    tenant_schedules: Table = TenantSchedule.__table__  # type: ignore[assignment]
    agent_schedules: Table = AgentSchedule.__table__  # type: ignore[assignment]
    tenant_rows: Table = Tenant.__table__  # type: ignore[assignment]
    r, t, g = _RUNS.c, tenant_schedules.c, agent_schedules.c
    tenants: Any = bindparam("tenants", expanding=True)
    queues = select(r.tenant_id, r.agent_name).where(r.runnable_at.is_not(None))
    order = (r.tenant_id, r.agent_name)
    return _ClaimStatements(
        first_queue=queues.order_by(*order).limit(1),
        next_queue=queues.where(tuple_(*order) > tuple_(bindparam("tenant"), bindparam("agent")))
        .order_by(*order).limit(1),
        active=select(tenant_rows.c.id).where(tenant_rows.c.id.in_(tenants), tenant_rows.c.status == "active"),
        schedules=select(t.tenant_id, t.vtime, t.weight, t.running, t.cap, t.avg_slice_s)
        .where(t.tenant_id.in_(tenants)),
        agents=select(g.tenant_id, g.agent_name, g.running, g.cap).where(g.tenant_id.in_(tenants)),
        head=select(r.id, r.priority, r.runnable_at)
        .where(r.tenant_id == bindparam("tenant"), r.agent_name == bindparam("agent"), r.runnable_at.is_not(None),
               r.runnable_at <= bindparam("now", type_=r.runnable_at.type))
        .order_by(r.priority, r.runnable_at, r.id).limit(1),
        new_schedule=insert_ignore(dialect, tenant_schedules, "tenant_id")
        .values(tenant_id=bindparam("tenant"), weight=1, vtime=bindparam("vtime", type_=t.vtime.type),
                avg_slice_s=DEFAULT_SLICE_S, running=1, updated_at=bindparam("now", type_=t.updated_at.type)),
        charge_schedule=update(tenant_schedules).where(t.tenant_id == bindparam("tenant"))
        .values(vtime=bindparam("vtime", type_=t.vtime.type), running=t.running + 1,
                updated_at=bindparam("now", type_=t.updated_at.type)),
        agent_running=upsert(dialect, agent_schedules)
        .values(tenant_id=bindparam("tenant"), agent_name=bindparam("agent"), running=1)
        .on_conflict_do_update(index_elements=["tenant_id", "agent_name"], set_={"running": g.running + 1}),
        take=update(_RUNS).where(r.id == bindparam("run"), r.runnable_at.is_not(None))
        .values(lease_owner=bindparam("owner"), lease_until=bindparam("lease_until", type_=r.lease_until.type),
                fence=r.fence + 1, runnable_at=None, state="running", reason=None,
                started_at=func.coalesce(r.started_at, bindparam("now", type_=r.started_at.type)),
                updated_at=bindparam("now", type_=r.updated_at.type), wake_at=None)
        .returning(*(r[c] for c in _CLAIMED_COLUMNS)))


def dispatch_repository(session: Session) -> DispatchRepository:
    """The dispatch repository for the session's database."""
    return for_dialect(session, DispatchRepository, PostgresDispatchRepository)


def _decremented(column: Any) -> Any:
    """``column - 1``, never below zero (portable: no GREATEST on SQLite)."""
    return case((column > 0, column - 1), else_=0)
