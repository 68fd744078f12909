"""All SQL for the reliability read models: the runner's upserts and the operator dashboard's reads.

Writes (:class:`ReliabilityRepository`, tenant-scoped) are set-based upserts
``INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x`` on SQLite and PostgreSQL (one statement per table
for a whole batch of the deriver), so a count is never lost and a batch of a million events costs a few hundred
statements, not one per event.

Reads (:class:`PlatformReliabilityRepository`) are the operator's explicit cross-tenant path. They
aggregate the rollup tables; the only reads of ``runs`` are index lookups (live state counts on
``ix_runs_state_lease``, search by tenant/id, one run's timeline).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, and_, case, delete, func, literal, or_, select
from sqlalchemy.orm import Session

from tenants.accounts.models import ApiKey, Tenant
from tenants.agents.models import Agent, AgentVersion
from tenants.kit.db import Base, upsert
from tenants.kit.repository import PlatformRepository, TenantRepository, for_dialect
from tenants.reliability.models import (
    LATEST_FAILURES_PER_TENANT,
    AgentHealth,
    FailureHourly,
    LatestFailure,
    ReadModelCursor,
    ReliabilityCounter,
    RunRollupHourly,
    RunStartWait,
    StepStatDaily,
)
from tenants.runs.models import DecisionEvent, Run, RunItem, SideEffect, StepCheckpoint

__all__ = ["RUN_OUTCOME_COLUMNS", "BulkLoader", "DeriverRepository", "EventRow", "FailureEntry", "HealthDelta",
           "PlatformReliabilityRepository", "PostgresBulkLoader", "ReliabilityRepository", "bulk_loader"]

RUN_OUTCOME_COLUMNS = ("succeeded", "failed", "escalated", "cancelled", "budget_exhausted")
LIVE_STATES = ("queued", "running", "waiting_approval", "escalated")


@dataclass(frozen=True, slots=True)
class HealthDelta:
    """A batch of one agent's outcomes (in log order) folded so that ONE upsert applies them all to its
    ``agent_health`` row: what the outcomes before the first success do depends on the incident the row holds
    open; what comes after it does not (the success closes any incident)."""

    last_state: str
    last_finished_at: datetime
    first_bad_ms: int | None  # the first bad outcome before the first success (or in the batch, without one)
    bad_before_good: int  # bad outcomes before the first success (all of them, without one)
    first_good_ms: int | None  # the first success; None: no success in the batch
    incidents_after: int = 0  # incidents closed after the first success, and their recovery times
    recovery_ms_after: int = 0
    open_since_ms: int | None = None  # the incident open at the end, opened after the first success
    consecutive_failures: int = 0  # bad outcomes after the last success


@dataclass(frozen=True, slots=True)
class FailureEntry:
    """One failed / escalated / budget-exhausted run for the tenant's latest-failures ring buffer."""

    run_id: str
    agent_name: str
    state: str
    category: str
    reason: str | None
    at: datetime


class ReliabilityRepository(TenantRepository):
    """The deriver's writes to one tenant's read models: each a set of rows added in ONE statement."""

    def _bump_many(self, model: Any, keys: Sequence[str], rows: Sequence[Mapping[str, Any]],
                   maxima: Sequence[str] = ()) -> None:
        """Add ``rows`` (key columns and increments) to their rollups: ``x = x + excluded.x`` for an increment,
        the larger value for a column in ``maxima`` (one executemany of one upsert)."""
        if not rows:
            return
        table = model.__table__
        stmt = upsert(self.session, table)
        set_: dict[str, Any] = {name: table.c[name] + stmt.excluded[name]
                                for name in rows[0] if name not in keys and name not in maxima}
        for name in maxima:
            set_[name] = case((stmt.excluded[name] > table.c[name], stmt.excluded[name]), else_=table.c[name])
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id", *keys], set_=set_)
        self.session.execute(stmt, [{"tenant_id": self.tenant_id, **row} for row in rows])

    def bump_run_hours(self, rows: Mapping[tuple[str, datetime], Mapping[str, Any]]) -> None:
        """Add to many (agent, hour) run rollups (``started``, the outcome counts, ``duration_ms_sum``,
        ``cost_usd_sum``; every one of them in every row)."""
        self._bump_many(RunRollupHourly, ("agent_name", "hour"),
                        [{"agent_name": agent, "hour": hour, **values} for (agent, hour), values in rows.items()])

    def bump_step_days(self, rows: Mapping[tuple[str, str, datetime], Mapping[str, Any]]) -> None:
        """Add to many (agent, step, day) rollups: attempts, outcomes, retries, latency (sum and maximum)."""
        self._bump_many(StepStatDaily, ("agent_name", "step_id", "day"),
                        [{"agent_name": agent, "step_id": step_id, "day": day, **values}
                         for (agent, step_id, day), values in rows.items()], maxima=("latency_ms_max",))

    def bump_failure_hours(self, counts: Mapping[tuple[str, datetime, str], int]) -> None:
        """Add to many (agent, hour, category) failure counts."""
        self._bump_many(FailureHourly, ("agent_name", "hour", "category"),
                        [{"agent_name": agent, "hour": hour, "category": category, "count": n}
                         for (agent, hour, category), n in counts.items()])

    def bump_start_waits(self, counts: Mapping[tuple[datetime, int], int]) -> None:
        """Add runs to many (minute, wait bucket) cells of the tenant's time-to-start histogram."""
        self._bump_many(RunStartWait, ("minute", "bucket"),
                        [{"minute": minute, "bucket": bucket, "runs": n} for (minute, bucket), n in counts.items()])

    def note_outcomes(self, agent_name: str, d: HealthDelta) -> None:
        """Apply a batch of the agent's outcomes to its open incident (opened by the first bad run, closed and
        timed by the next success), in ONE upsert: the same row as noting them one by one."""
        t = AgentHealth.__table__
        if d.first_good_ms is None:  # bad runs add to the open incident (or open one); nothing closes
            values = {"open_since_ms": d.first_bad_ms, "consecutive_failures": d.bad_before_good,
                      "incidents": 0, "recovery_ms_sum": 0}
        else:
            before = d.first_good_ms - d.first_bad_ms if d.first_bad_ms is not None else 0
            values = {"open_since_ms": d.open_since_ms, "consecutive_failures": d.consecutive_failures,
                      "incidents": int(d.first_bad_ms is not None) + d.incidents_after,
                      "recovery_ms_sum": before + d.recovery_ms_after}
        stmt = upsert(self.session, AgentHealth).values(
            tenant_id=self.tenant_id, agent_name=agent_name, last_state=d.last_state,
            last_finished_at=d.last_finished_at, **values)
        set_: dict[str, Any] = {"last_state": stmt.excluded.last_state,
                                "last_finished_at": stmt.excluded.last_finished_at}
        opened = t.c.open_since_ms if d.first_bad_ms is None else func.coalesce(
            t.c.open_since_ms, literal(d.first_bad_ms, BigInteger()))
        if d.first_good_ms is None:
            set_["open_since_ms"] = opened
            set_["consecutive_failures"] = t.c.consecutive_failures + d.bad_before_good
        else:  # the first success closes what was open then; the rest of the batch is in the inserted values
            set_["incidents"] = t.c.incidents + case((opened.is_not(None), 1), else_=0) + d.incidents_after
            set_["recovery_ms_sum"] = t.c.recovery_ms_sum + func.coalesce(
                literal(d.first_good_ms, BigInteger()) - opened, 0) + d.recovery_ms_after
            set_["open_since_ms"] = stmt.excluded.open_since_ms
            set_["consecutive_failures"] = stmt.excluded.consecutive_failures
        self.session.execute(stmt.on_conflict_do_update(index_elements=["tenant_id", "agent_name"], set_=set_))

    def push_latest_failures(self, failures: Sequence[FailureEntry]) -> None:
        """Append failures (in log order) to the tenant's ring buffer of recent failures (slot = seq mod N): the
        sequence moves by all of them at once; only the last N are written (the earlier ones would be
        overwritten in the same batch)."""
        if not failures:
            return
        n = len(failures)
        counter = upsert(self.session, ReliabilityCounter).values(tenant_id=self.tenant_id, failures_seq=n)
        counter = counter.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={"failures_seq": ReliabilityCounter.__table__.c.failures_seq + counter.excluded.failures_seq},
        ).returning(ReliabilityCounter.failures_seq)
        first = int(self.session.execute(counter).scalar_one()) - n + 1
        rows = [{"tenant_id": self.tenant_id, "slot": (seq - 1) % LATEST_FAILURES_PER_TENANT, "seq": seq,
                 "run_id": f.run_id, "agent_name": f.agent_name, "state": f.state, "category": f.category,
                 "reason": (f.reason or "")[:500] or None, "at": f.at}
                for seq, f in enumerate(failures, start=first)][-LATEST_FAILURES_PER_TENANT:]
        table = LatestFailure.__table__
        stmt = upsert(self.session, table)
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id", "slot"],
                                          set_={name: stmt.excluded[name] for name in rows[0]
                                                if name not in ("tenant_id", "slot")})
        self.session.execute(stmt, rows)


class EventRow(NamedTuple):
    """A decision event as the read-model deriver needs it (with its run's agent and start); a named tuple:
    millions are made for a large seed, and a tuple is made several times faster than a frozen dataclass."""

    id: int
    tenant_id: str
    run_id: str
    agent_name: str
    started_at: datetime | None
    kind: str
    step_id: str | None
    failure_category: str | None
    why: str | None
    cost_usd: Decimal
    latency_ms: float
    attempts: int | None
    created_at: datetime
    run_created_at: datetime | None = None  # when the run was submitted (time-to-start = started_at - this)


_DERIVED_KINDS = ("run.started", "step.succeeded", "step.failed",
                  *(f"run.{state}" for state in RUN_OUTCOME_COLUMNS))


class DeriverRepository(PlatformRepository):
    """The read-model deriver's reads of the decision log (every tenant's) and its cursor."""

    def cursor(self, name: str) -> tuple[int, dict[str, str]]:
        """(last id folded, gaps) — locked until the caller commits, so two derivers never fold twice."""
        row = self.session.scalar(select(ReadModelCursor).where(ReadModelCursor.name == name).with_for_update())
        if row is None:
            return 0, {}
        return int(row.last_id), dict(row.gaps or {})

    def save_cursor(self, name: str, last_id: int, gaps: dict[str, str], now: datetime) -> None:
        stmt = upsert(self.session, ReadModelCursor).values(name=name, last_id=last_id, gaps=gaps,
                                                                    updated_at=now)
        self.session.execute(stmt.on_conflict_do_update(
            index_elements=["name"], set_={"last_id": last_id, "gaps": gaps, "updated_at": now}))

    def as_of(self, name: str) -> datetime | None:
        """When the deriver last caught up (the dashboard's "as of")."""
        return self.session.scalar(select(ReadModelCursor.updated_at).where(ReadModelCursor.name == name))

    def event_ids_after(self, last_id: int, limit: int) -> list[int]:
        return [int(i) for i in self.session.scalars(
            select(DecisionEvent.id).where(DecisionEvent.id > last_id).order_by(DecisionEvent.id).limit(limit))]

    def events_after(self, last_id: int) -> tuple[int, int]:
        """(how many events have an id above ``last_id``, the highest id; ``last_id`` when none): a primary-key
        range."""
        e = DecisionEvent
        count, high = self.session.execute(select(func.count(), func.max(e.id)).where(e.id > last_id)).one()
        return int(count or 0), int(high if high is not None else last_id)

    def existing(self, ids: list[str]) -> list[int]:
        """Which of the gap ids are visible now."""
        wanted = [int(i) for i in ids]
        return [int(i) for i in self.session.scalars(select(DecisionEvent.id).where(DecisionEvent.id.in_(wanted)))]

    def events(self, after: int, upto: int, also: list[int]) -> list[EventRow]:
        """The events the read models count with ids in (after, upto] or in ``also``, in id order."""
        e = DecisionEvent
        ids = e.id.in_(also) if also else None
        window = and_(e.id > after, e.id <= upto)
        rows = self.session.execute(
            select(e.id, e.tenant_id, e.run_id, Run.agent_name, Run.started_at, e.kind, e.step_id, e.failure_category,
                   e.why, e.cost_usd, e.latency_ms, e.attempts, e.created_at, Run.created_at)
            .join(Run, Run.id == e.run_id)
            .where(or_(window, ids) if ids is not None else window, e.kind.in_(_DERIVED_KINDS))
            .order_by(e.id)).all()
        return [EventRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4], str(r[5]), r[6], r[7], r[8],
                         Decimal(r[9] or 0), float(r[10] or 0), r[11], r[12], r[13]) for r in rows]

    def prune_start_waits(self, before: datetime) -> None:
        """Drop time-to-start minutes older than ``before`` (an index range on ``ix_run_start_waits_minute``)."""
        self.session.execute(delete(RunStartWait).where(RunStartWait.minute < before))


class PlatformReliabilityRepository(PlatformRepository):
    """Operator reads across every tenant (the dashboard), and bulk loading for seeds and benchmarks."""

    # ---- rollups ---------------------------------------------------------------------------
    def run_totals_by_hour(self, since: datetime) -> Sequence[Any]:
        r = RunRollupHourly
        return self.session.execute(
            select(r.hour, func.sum(r.started), *(func.sum(getattr(r, c)) for c in RUN_OUTCOME_COLUMNS),
                   func.sum(r.duration_ms_sum), func.sum(r.cost_usd_sum))
            .where(r.hour >= since).group_by(r.hour).order_by(r.hour)
        ).all()

    def run_totals_by_agent(self, since: datetime) -> Sequence[Any]:
        """(tenant_id, agent_name, started, succeeded, failed, escalated, cancelled, budget_exhausted,
        duration_ms_sum, cost_usd_sum) since ``since``."""
        r = RunRollupHourly
        return self.session.execute(
            select(r.tenant_id, r.agent_name, func.sum(r.started),
                   *(func.sum(getattr(r, c)) for c in RUN_OUTCOME_COLUMNS),
                   func.sum(r.duration_ms_sum), func.sum(r.cost_usd_sum))
            .where(r.hour >= since).group_by(r.tenant_id, r.agent_name)
        ).all()

    def step_totals(self, since_day: datetime, tenant_id: str | None = None,
                    agent_name: str | None = None) -> Sequence[Any]:
        """(tenant_id, agent_name, step_id, attempts, succeeded, failed, retries, latency_sum, latency_max)."""
        s = StepStatDaily
        q = (select(s.tenant_id, s.agent_name, s.step_id, func.sum(s.attempts), func.sum(s.succeeded),
                    func.sum(s.failed), func.sum(s.retries), func.sum(s.latency_ms_sum), func.max(s.latency_ms_max))
             .where(s.day >= since_day).group_by(s.tenant_id, s.agent_name, s.step_id))
        if tenant_id:
            q = q.where(s.tenant_id == tenant_id)
        if agent_name:
            q = q.where(s.agent_name == agent_name)
        return self.session.execute(q).all()

    def failures_by_hour(self, since: datetime, tenant_id: str | None = None,
                         agent_name: str | None = None) -> Sequence[Any]:
        """(hour, category, count) since ``since``, optionally for one tenant / agent."""
        f = FailureHourly
        q = (select(f.hour, f.category, func.sum(f.count)).where(f.hour >= since)
             .group_by(f.hour, f.category).order_by(f.hour))
        if tenant_id:
            q = q.where(f.tenant_id == tenant_id)
        if agent_name:
            q = q.where(f.agent_name == agent_name)
        return self.session.execute(q).all()

    def latest_failures(self, limit: int, tenant_id: str | None = None) -> Sequence[LatestFailure]:
        q = select(LatestFailure).order_by(LatestFailure.at.desc(), LatestFailure.seq.desc()).limit(limit)
        if tenant_id:
            q = q.where(LatestFailure.tenant_id == tenant_id)
        return self.session.scalars(q).all()

    def agent_health(self) -> Sequence[AgentHealth]:
        return self.session.scalars(select(AgentHealth)).all()

    def start_waits(self, since: datetime) -> list[tuple[str, int, int]]:
        """(tenant_id, wait bucket, runs) of the runs that first started in a minute from ``since`` on (a range of
        ``ix_run_start_waits_minute``: at most tenants x minutes x buckets rows, whatever the run volume)."""
        w = RunStartWait
        rows = self.session.execute(
            select(w.tenant_id, w.bucket, func.sum(w.runs)).where(w.minute >= since).group_by(w.tenant_id, w.bucket)
        ).all()
        return [(str(t), int(b), int(n or 0)) for t, b, n in rows]

    # ---- how current the read models are -----------------------------------------------------
    def derivation_state(self, cursor: str, count_limit: int) -> tuple[datetime | None, int, datetime | None]:
        """(the deriver's last pass, decision events it has not read yet (counted up to ``count_limit``), the
        oldest of those's time): primary-key ranges above the cursor, never a scan of the log."""
        c = ReadModelCursor
        row = self.session.execute(select(c.last_id, c.updated_at).where(c.name == cursor)).first()
        last_id, derived_at = (int(row[0]), row[1]) if row is not None else (0, None)
        e = DecisionEvent
        pending = select(e.id).where(e.id > last_id).order_by(e.id).limit(count_limit).subquery()
        count = int(self.session.scalar(select(func.count()).select_from(pending)) or 0)
        oldest = self.session.scalar(select(e.created_at).where(e.id > last_id).order_by(e.id).limit(1)) \
            if count else None
        return derived_at, count, oldest

    # ---- live counts (index lookups on runs.state) -----------------------------------------
    def live_counts(self, now: datetime, stuck_after: datetime) -> dict[str, int]:
        """Runs now queued / running / waiting_approval / escalated, and ``stuck``: running with an
        expired lease, or handed back and not picked up since ``stuck_after``."""
        rows = self.session.execute(
            select(Run.state, func.count()).where(Run.state.in_(LIVE_STATES)).group_by(Run.state)
        ).all()
        counts = {str(state): int(n) for state, n in rows}
        stuck = self.session.scalar(
            select(func.count()).select_from(Run).where(
                Run.state == "running",
                or_(Run.lease_until < now, and_(Run.lease_until.is_(None), Run.wake_at < stuck_after)),
            )
        )
        counts["stuck"] = int(stuck or 0)
        return counts

    def live_counts_by_tenant(self, now: datetime, stuck_after: datetime) -> list[tuple[str, str, int]]:
        """(tenant_id, state, runs) for the live states, plus (tenant_id, "stuck", runs) as in :meth:`live_counts`
        (index lookups on ``ix_runs_state_lease``)."""
        rows = self.session.execute(
            select(Run.tenant_id, Run.state, func.count()).where(Run.state.in_(LIVE_STATES))
            .group_by(Run.tenant_id, Run.state)
        ).all()
        stuck = self.session.execute(
            select(Run.tenant_id, func.count()).where(
                Run.state == "running",
                or_(Run.lease_until < now, and_(Run.lease_until.is_(None), Run.wake_at < stuck_after)),
            ).group_by(Run.tenant_id)
        ).all()
        return [(str(t), str(s), int(n)) for t, s, n in rows] + [(str(t), "stuck", int(n)) for t, n in stuck]

    def waiting_since_by_tenant(self, state: str) -> list[tuple[str, int, datetime]]:
        """(tenant_id, runs, oldest ``updated_at``) of runs in ``state`` (queued: waiting to start or continue;
        escalated: waiting for a human since they ended), by the ``ix_runs_state_lease`` state prefix."""
        rows = self.session.execute(
            select(Run.tenant_id, func.count(), func.min(Run.updated_at)).where(Run.state == state)
            .group_by(Run.tenant_id)
        ).all()
        return [(str(t), int(n), oldest) for t, n, oldest in rows]

    # ---- catalogue ---------------------------------------------------------------------------
    def tenants(self) -> Sequence[Tenant]:
        return self.session.scalars(select(Tenant).order_by(Tenant.name)).all()

    def latest_specs(self) -> Sequence[Any]:
        """(tenant_id, agent_name, version, spec) of every agent's latest version."""
        return self.session.execute(
            select(Agent.tenant_id, Agent.name, AgentVersion.version, AgentVersion.spec)
            .join(AgentVersion, and_(AgentVersion.agent_id == Agent.id,
                                     AgentVersion.version == Agent.latest_version))
            .order_by(Agent.tenant_id, Agent.name)
        ).all()

    def api_keys(self) -> Sequence[ApiKey]:
        return self.session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()

    # ---- runs (index lookups) -----------------------------------------------------------------
    def search_runs(self, *, tenant_id: str | None, agent_name: str | None, state: str | None,
                    run_id: str | None, limit: int) -> Sequence[Run]:
        """Newest first; the tenant filter uses ``ix_runs_tenant_created``, the id an exact PK lookup."""
        q = select(Run).order_by(Run.id.desc()).limit(limit)
        if run_id:
            q = q.where(Run.id == run_id)
        if tenant_id:
            q = q.where(Run.tenant_id == tenant_id)
        if agent_name:
            q = q.where(Run.agent_name == agent_name)
        if state:
            q = q.where(Run.state == state)
        return self.session.scalars(q).all()

    def runs_in_states(self, states: Sequence[str], limit: int) -> Sequence[Run]:
        return self.session.scalars(
            select(Run).where(Run.state.in_(states)).order_by(Run.updated_at).limit(limit)
        ).all()

    def escalated_items(self, run_ids: Sequence[str], limit: int) -> Sequence[RunItem]:
        """The escalated items of these runs: one ``ix_run_items_state`` (run_id, state, item_index) probe per run."""
        if not run_ids:
            return []
        return self.session.scalars(
            select(RunItem).where(RunItem.run_id.in_(list(run_ids)), RunItem.state == "escalated")
            .order_by(RunItem.run_id, RunItem.item_index).limit(limit)
        ).all()

    def recent_run_ids(self, tenant_id: str, limit: int) -> list[str]:
        return list(self.session.scalars(
            select(Run.id).where(Run.tenant_id == tenant_id).order_by(Run.id.desc()).limit(limit)
        ).all())

    def run(self, run_id: str) -> Run | None:
        return self.session.get(Run, run_id)

    def run_items(self, run_id: str, limit: int) -> Sequence[RunItem]:
        return self.session.scalars(
            select(RunItem).where(RunItem.run_id == run_id).order_by(RunItem.item_index).limit(limit)
        ).all()

    def run_events(self, run_id: str, limit: int) -> Sequence[DecisionEvent]:
        return self.session.scalars(
            select(DecisionEvent).where(DecisionEvent.run_id == run_id).order_by(DecisionEvent.seq).limit(limit)
        ).all()

    def run_checkpoints(self, run_id: str, limit: int) -> Sequence[StepCheckpoint]:
        return self.session.scalars(
            select(StepCheckpoint).where(StepCheckpoint.run_id == run_id)
            .order_by(StepCheckpoint.item_index, StepCheckpoint.step_index).limit(limit)
        ).all()

    def run_side_effects(self, run_id: str, limit: int) -> Sequence[SideEffect]:
        return self.session.scalars(
            select(SideEffect).where(SideEffect.run_id == run_id)
            .order_by(SideEffect.item_index, SideEffect.step_index).limit(limit)
        ).all()

    def count(self, table_name: str) -> int:
        table = Base.metadata.tables[table_name]
        return int(self.session.scalar(select(func.count()).select_from(table)) or 0)


class BulkLoader(PlatformRepository):
    """Bulk loading of history (seed, benchmark; never for runs the runner executes): executemany (SQLite)."""

    def load(self, table_name: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert ``rows`` into ``table_name``; returns the row count."""
        batch = list(rows)
        if batch:
            self._write(Base.metadata.tables[table_name], batch)
        return len(batch)

    def _write(self, table: Any, batch: list[Mapping[str, Any]]) -> None:
        self.session.execute(table.insert(), batch)


class PostgresBulkLoader(BulkLoader):
    """PostgreSQL: ``COPY ... FROM STDIN`` (JSON columns serialised by hand)."""

    def _write(self, table: Any, batch: list[Mapping[str, Any]]) -> None:
        columns = list(batch[0])
        json_cols = {c.name for c in table.columns if c.name in columns and "JSON" in type(c.type).__name__.upper()}
        json_cols |= {c.name for c in table.columns if c.name in columns and hasattr(c.type, "variant_mapping")
                      and "postgresql" in c.type.variant_mapping}
        raw = self.session.connection().connection.driver_connection
        assert raw is not None
        cols_sql = ", ".join(f'"{c}"' for c in columns)
        values = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
        json_at = [i for i, c in enumerate(columns) if c in json_cols]
        with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols_sql}) FROM STDIN') as copy:
            for row in batch:
                cells = values(row)
                if json_at:
                    cells = list(cells)
                    for i in json_at:
                        if cells[i] is not None:
                            cells[i] = json.dumps(cells[i])
                copy.write_row(cells)


def bulk_loader(session: Session) -> BulkLoader:
    """The bulk loader for the session's database."""
    return for_dialect(session, BulkLoader, PostgresBulkLoader)
