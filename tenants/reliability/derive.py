"""The write side of the reliability read models: derived from the decision log, off the hot path.

The engine writes nothing for the dashboard. The scheduler (and ``midwatch up``'s sweeper thread) folds
new decision events into the rollups about once a second, in batches, in the same transaction that moves
the cursor, so a crash never counts an event twice and staleness stays a few seconds:

- ``run.started``: a run's first start, in its hour, and its time-to-start (``started_at - created_at``) in the
  tenant's per-minute histogram (:func:`wait_bucket`; minutes older than ``START_WAIT_RETENTION`` are skipped
  and pruned);
- ``step.succeeded`` / ``step.failed``: one step outcome per item (attempts, retries, latency), per day;
- ``run.<terminal state>``: the outcome in its hour (duration from the run's start, its total cost), the
  failure rollup by category, the tenant's latest-failures ring buffer and the agent's incidents (MTTR).

Event ids come from one sequence; on PostgreSQL a transaction can commit after a later id is already
visible, so ids the deriver passed without seeing are kept as gaps and folded when they appear; a gap
still empty after :data:`GAP_TTL_S` was a rolled-back transaction and is forgotten. Runs of rehearsals
never reach these tables (``runs.rehearsal`` is excluded by the reader).

A batch is aggregated in memory and written set-based: one upsert per table and tenant, and one per agent for
its incidents (:func:`health_delta`), the same rows as folding the events one at a time. A seed that bulk-loads
history hands the events it just wrote to :func:`derive_written`: the same fold and cursor, without reading
millions of events back.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.reliability.models import FAILURE_CATEGORIES, START_WAIT_RATIO, START_WAIT_RETENTION
from tenants.reliability.repository import (
    RUN_OUTCOME_COLUMNS,
    DeriverRepository,
    EventRow,
    FailureEntry,
    HealthDelta,
    ReliabilityRepository,
)

__all__ = ["BAD_STATES", "CURSOR", "GAP_TTL_S", "bucket_wait_s", "day_of", "derive_all", "derive_once",
           "derive_written", "health_delta", "hour_of", "minute_of", "wait_bucket"]

CURSOR = "reliability"
GAP_TTL_S = 120.0
BATCH = 5000
BAD_STATES = frozenset({"failed", "escalated", "budget_exhausted"})
_RUN_END = frozenset(f"run.{s}" for s in RUN_OUTCOME_COLUMNS)


def hour_of(at: datetime) -> datetime:
    """The hour bucket of ``at`` (UTC)."""
    return at.replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    """The day bucket of ``at`` (UTC midnight)."""
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def minute_of(at: datetime) -> datetime:
    """The minute bucket of ``at`` (UTC)."""
    return at.replace(second=0, microsecond=0)


_LOG_RATIO = math.log(START_WAIT_RATIO)


def wait_bucket(wait_ms: float) -> int:
    """The time-to-start histogram bucket of a wait: 0 below 1 ms, else ``b`` for [R^(b-1), R^b) ms."""
    return 0 if wait_ms < 1.0 else 1 + int(math.log(wait_ms) / _LOG_RATIO)


def bucket_wait_s(bucket: int) -> float:
    """The wait a bucket stands for, in seconds: its geometric middle R^(b-1/2) ms, within 5 % of any wait in
    it (R = 1.1); bucket 0 (under 1 ms) reads as 0."""
    return 0.0 if bucket <= 0 else math.exp((bucket - 0.5) * _LOG_RATIO) / 1000.0


@dataclass
class _Fold:
    """One batch of events, aggregated in memory, then written set-based (:meth:`write`)."""

    run_hours: dict[tuple[str, str, datetime], dict[str, Any]] = field(default_factory=dict)
    step_days: dict[tuple[str, str, str, datetime], list[float]] = field(default_factory=dict)
    failures: dict[tuple[str, str, datetime, str], int] = field(default_factory=lambda: defaultdict(int))
    outcomes: list[EventRow] = field(default_factory=list)
    start_waits: dict[str, dict[tuple[datetime, int], int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    start_horizon: datetime | None = None  # starts in minutes before this are not kept

    def add(self, e: EventRow) -> None:
        if e.kind == "run.started":
            self._run_hour(e.tenant_id, e.agent_name, hour_of(e.created_at))["started"] += 1
            self._start_wait(e)
        elif e.kind in ("step.succeeded", "step.failed") and e.step_id:
            attempts = max(1, e.attempts or 1)
            row = self.step_days.setdefault((e.tenant_id, e.agent_name, e.step_id, day_of(e.created_at)),
                                            [0, 0, 0, 0, 0.0, 0.0])
            ok = e.kind == "step.succeeded"
            row[0] += attempts
            row[1] += int(ok)
            row[2] += int(not ok)
            row[3] += attempts - 1
            row[4] += max(0.0, e.latency_ms)
            row[5] = max(row[5], e.latency_ms)
        elif e.kind in _RUN_END:
            state = e.kind.removeprefix("run.")
            hour = hour_of(e.created_at)
            totals = self._run_hour(e.tenant_id, e.agent_name, hour)
            totals[state] += 1
            if e.started_at is not None:
                totals["duration_ms_sum"] += max(0, int((e.created_at - e.started_at).total_seconds() * 1000))
            totals["cost_usd_sum"] += e.cost_usd
            if state in BAD_STATES:
                category = e.failure_category if e.failure_category in FAILURE_CATEGORIES else "internal"
                self.failures[(e.tenant_id, e.agent_name, hour, category)] += 1
            self.outcomes.append(e)

    def _start_wait(self, e: EventRow) -> None:
        started = e.started_at or e.created_at
        minute = minute_of(started)
        if e.run_created_at is None or (self.start_horizon is not None and minute < self.start_horizon):
            return
        wait_ms = max(0.0, (started - e.run_created_at).total_seconds() * 1000)
        self.start_waits[e.tenant_id][(minute, wait_bucket(wait_ms))] += 1

    def _run_hour(self, tenant_id: str, agent: str, hour: datetime) -> dict[str, Any]:
        return self.run_hours.setdefault((tenant_id, agent, hour), {
            "started": 0, **dict.fromkeys(RUN_OUTCOME_COLUMNS, 0), "duration_ms_sum": 0,
            "cost_usd_sum": Decimal(0)})

    def write(self, session: Session) -> None:
        """Every table's rows of this batch, set-based: one upsert per table and tenant, one per agent's health."""
        tenants: dict[str, _TenantRows] = defaultdict(_TenantRows)
        for (tenant_id, agent, hour), values in self.run_hours.items():
            tenants[tenant_id].run_hours[(agent, hour)] = values
        for (tenant_id, agent, step_id, day), (att, ok, failed, retries, lat_sum, lat_max) in self.step_days.items():
            tenants[tenant_id].step_days[(agent, step_id, day)] = {
                "attempts": int(att), "succeeded": int(ok), "failed": int(failed), "retries": int(retries),
                "latency_ms_sum": lat_sum, "latency_ms_max": lat_max}
        for (tenant_id, agent, hour, category), count in self.failures.items():
            tenants[tenant_id].failures[(agent, hour, category)] = count
        for e in self.outcomes:  # in log order: incidents open and close as they happened
            rows = tenants[e.tenant_id]
            rows.outcomes[e.agent_name].append(e)
            state = e.kind.removeprefix("run.")
            if state in BAD_STATES:
                category = e.failure_category if e.failure_category in FAILURE_CATEGORIES else "internal"
                rows.latest.append(FailureEntry(e.run_id, e.agent_name, state, category, e.why, e.created_at))
        for tenant_id, cells in self.start_waits.items():
            tenants[tenant_id].start_waits = cells
        for tenant_id, rows in tenants.items():
            rows.write(ReliabilityRepository(session, tenant_id))


@dataclass
class _TenantRows:
    """One tenant's share of a batch, keyed as its repository writes it."""

    run_hours: dict[tuple[str, datetime], dict[str, Any]] = field(default_factory=dict)
    step_days: dict[tuple[str, str, datetime], dict[str, Any]] = field(default_factory=dict)
    failures: dict[tuple[str, datetime, str], int] = field(default_factory=dict)
    start_waits: dict[tuple[datetime, int], int] = field(default_factory=dict)
    outcomes: dict[str, list[EventRow]] = field(default_factory=lambda: defaultdict(list))
    latest: list[FailureEntry] = field(default_factory=list)

    def write(self, repo: ReliabilityRepository) -> None:
        repo.bump_run_hours(self.run_hours)
        repo.bump_step_days(self.step_days)
        repo.bump_failure_hours(self.failures)
        repo.bump_start_waits(self.start_waits)
        for agent, outcomes in self.outcomes.items():
            repo.note_outcomes(agent, health_delta(outcomes))
        repo.push_latest_failures(self.latest)


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def health_delta(outcomes: list[EventRow]) -> HealthDelta:
    """Fold one agent's outcome events (``run.<state>``, in log order) into what they do to its health row: a bad
    run opens an incident (or adds to the open one), a success closes and times it, anything else only becomes
    the last state."""
    first_bad: int | None = None
    bad_before = 0
    first_good: int | None = None
    incidents = recovery = consecutive = 0
    open_since: int | None = None
    for e in outcomes:
        state, at_ms = e.kind.removeprefix("run."), _epoch_ms(e.created_at)
        if first_good is None:  # still before the first success: depends on what the row holds open
            if state in BAD_STATES:
                first_bad = at_ms if first_bad is None else first_bad
                bad_before += 1
            elif state == "succeeded":
                first_good = at_ms
        elif state in BAD_STATES:
            open_since = at_ms if open_since is None else open_since
            consecutive += 1
        elif state == "succeeded":
            if open_since is not None:
                incidents += 1
                recovery += at_ms - open_since
            open_since, consecutive = None, 0
    last = outcomes[-1]
    return HealthDelta(last.kind.removeprefix("run."), last.created_at, first_bad, bad_before, first_good,
                       incidents, recovery, open_since, consecutive)


def derive_once(session: Session, *, now: datetime | None = None, batch: int = BATCH) -> int:
    """Fold the next batch of decision events into the read models, in the caller's transaction (which must
    commit for the cursor to move). Returns how many events were read."""
    now = now or utcnow()
    repo = DeriverRepository(session)
    last_id, gaps = repo.cursor(CURSOR)
    ids = repo.event_ids_after(last_id, batch)
    found_gaps = repo.existing(list(gaps)) if gaps else []
    if not ids and not found_gaps:
        repo.save_cursor(CURSOR, last_id, _live_gaps(gaps, now), now)
        return 0
    high = ids[-1] if ids else last_id
    new_gaps = _passed_over(last_id, high, ids, now)
    _fold(session, repo.events(last_id, high, found_gaps), now)
    remaining = {k: v for k, v in gaps.items() if int(k) not in set(found_gaps)}
    repo.save_cursor(CURSOR, high, _live_gaps({**remaining, **new_gaps}, now), now)
    return len(ids) + len(found_gaps)


def derive_written(session: Session, events: Sequence[EventRow], *, now: datetime | None = None) -> bool:
    """Fold decision events the caller's transaction has just appended (a seed's bulk load: every event it
    wrote, in write order; their ``id`` is not read) from memory instead of reading them back, and move the
    cursor past them — only when they are exactly the events the deriver has not read yet: the cursor (locked)
    has no gaps, and the events visible after it are as many as these (the caller sees its own, so none is
    someone else's). Else does nothing and returns False: :func:`derive_once` reads them as usual. The fold and
    the cursor are the same as derive_once's."""
    now = now or utcnow()
    repo = DeriverRepository(session)
    last_id, gaps = repo.cursor(CURSOR)
    count, high = repo.events_after(last_id)
    if gaps or count != len(events) or not events:
        return False
    _fold(session, events, now)
    contiguous = high - last_id == count  # else some ids were taken by transactions still in flight: gaps
    gaps = {} if contiguous else _passed_over(last_id, high, repo.event_ids_after(last_id, count), now)
    repo.save_cursor(CURSOR, high, _live_gaps(gaps, now), now)
    return True


def _fold(session: Session, events: Iterable[EventRow], now: datetime) -> None:
    """Fold ``events`` (in id order) into the read models and drop time-to-start minutes past the retention."""
    horizon = minute_of(now - START_WAIT_RETENTION)
    fold = _Fold(start_horizon=horizon)
    for e in events:
        fold.add(e)
    fold.write(session)
    DeriverRepository(session).prune_start_waits(horizon)


def _passed_over(last_id: int, high: int, ids: Sequence[int], now: datetime) -> dict[str, str]:
    """The ids in (last_id, high) not seen: transactions still in flight (or rolled back), kept as gaps."""
    seen = set(ids)
    return {str(i): now.isoformat() for i in range(last_id + 1, high) if i not in seen}


def _live_gaps(gaps: dict[str, str], now: datetime) -> dict[str, str]:
    """Gaps younger than :data:`GAP_TTL_S` (older ones were rolled-back transactions)."""
    horizon = now - timedelta(seconds=GAP_TTL_S)
    return {k: v for k, v in gaps.items() if datetime.fromisoformat(v) >= horizon}


def derive_all(max_batches: int = 100_000, *, batch: int = BATCH, now: datetime | None = None) -> int:
    """Fold every event there is now (tests, seeds, ``midwatch up`` at start); returns events folded.

    A seed of millions of events passes a larger ``batch``: fewer round trips and upserts, the same fold. ``now``
    (default: the clock at each batch) fixes the time-to-start horizon and the cursor's time (tests)."""
    total = 0
    for _ in range(max_batches):
        with unit_of_work() as session:
            n = derive_once(session, batch=batch, now=now)
        total += n
        if n == 0:
            return total
    return total
