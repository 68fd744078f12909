"""The read models derived from the decision log are exact: outcomes, steps, failures, incidents and the
latest-failures ring buffer add up on SQLite and PostgreSQL alike, and nothing is counted twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tenants.reliability import models as rm
from tenants.reliability.derive import derive_once
from tests.tenants.reliability.history import History, Step, write_history

T0 = datetime(2026, 11, 20, 3, 0, 0, tzinfo=UTC)


def _finish(s: Session, run: str, state: str, at: datetime, category: str | None = None, agent: str = "a") -> None:
    write_history(s, "t1", [History(run, state, at - timedelta(seconds=2), at, category, f"{run} {state}",
                                    Decimal("0.25"), agent=agent)])


def _derive(s: Session) -> None:
    while derive_once(s, batch=7):  # small batches: the cursor must carry across them
        pass
    s.flush()


def test_run_outcomes_in_the_same_hour_add_up(session: Session) -> None:
    write_history(session, "t1", [History(f"q{i}", None, T0 + timedelta(minutes=i)) for i in range(3)])
    _finish(session, "r1", "succeeded", T0 + timedelta(minutes=5))
    _finish(session, "r2", "succeeded", T0 + timedelta(minutes=6))
    _finish(session, "r3", "failed", T0 + timedelta(minutes=7), "dependency")
    _finish(session, "r4", "succeeded", T0 + timedelta(hours=1, minutes=1))
    _derive(session)
    rows = session.scalars(select(rm.RunRollupHourly).where(rm.RunRollupHourly.tenant_id == "t1")
                           .order_by(rm.RunRollupHourly.hour)).all()
    # r1-r3 start in T0's hour too (2 s before they finish); r4 starts and ends in the next hour
    assert [(r.hour, r.started, r.succeeded, r.failed) for r in rows] == [
        (T0, 6, 2, 1), (T0 + timedelta(hours=1), 1, 1, 0)]
    assert rows[0].duration_ms_sum == 6000
    assert rows[0].cost_usd_sum == Decimal("0.75")
    failures = session.scalars(select(rm.FailureHourly).where(rm.FailureHourly.tenant_id == "t1")).all()
    assert [(f.hour, f.category, f.count) for f in failures] == [(T0, "dependency", 1)]


def test_step_stats_count_outcomes_retries_and_keep_the_slowest_latency(session: Session) -> None:
    write_history(session, "t1", [
        History("r1", None, T0, steps=[Step("fetch", attempts=3, latency_ms=120.0)]),
        History("r2", None, T0, steps=[Step("fetch", ok=False, category="auth", latency_ms=900.5)]),
        History("r3", None, T0 + timedelta(hours=5), steps=[Step("fetch", latency_ms=80.0)])])
    _derive(session)
    row = session.scalars(select(rm.StepStatDaily).where(rm.StepStatDaily.tenant_id == "t1")).one()
    assert (row.attempts, row.succeeded, row.failed, row.retries) == (5, 2, 1, 2)
    assert row.latency_ms_sum == pytest.approx(1100.5)
    assert row.latency_ms_max == pytest.approx(900.5)


def test_latest_failures_is_a_ring_buffer_of_the_last_n_per_tenant(session: Session) -> None:
    n = rm.LATEST_FAILURES_PER_TENANT + 5
    for i in range(n):
        _finish(session, f"r{i}", "escalated", T0 + timedelta(minutes=i), "validation")
    _derive(session)
    rows = session.scalars(select(rm.LatestFailure).where(rm.LatestFailure.tenant_id == "t1")
                           .order_by(rm.LatestFailure.seq)).all()
    assert len(rows) == rm.LATEST_FAILURES_PER_TENANT
    assert rows[0].run_id == "r5" and rows[-1].run_id == f"r{n - 1}"
    assert {r.slot for r in rows} == set(range(rm.LATEST_FAILURES_PER_TENANT))


def test_agent_health_times_recovery_from_first_failure_to_next_success(session: Session) -> None:
    _finish(session, "r1", "succeeded", T0)
    _finish(session, "r2", "failed", T0 + timedelta(minutes=1), "dependency")
    _finish(session, "r3", "escalated", T0 + timedelta(minutes=3), "state")
    _finish(session, "r4", "cancelled", T0 + timedelta(minutes=4))
    _derive(session)
    health = session.scalars(select(rm.AgentHealth).where(rm.AgentHealth.tenant_id == "t1")).one()
    assert health.consecutive_failures == 2
    assert health.open_since_ms == int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    _finish(session, "r5", "succeeded", T0 + timedelta(minutes=6))
    _derive(session)
    session.expire_all()
    health = session.scalars(select(rm.AgentHealth).where(rm.AgentHealth.tenant_id == "t1")).one()
    assert (health.incidents, health.recovery_ms_sum, health.open_since_ms) == (1, 5 * 60 * 1000, None)
    assert health.last_state == "succeeded" and health.consecutive_failures == 0


def test_folding_again_counts_nothing_twice(session: Session) -> None:
    _finish(session, "r1", "succeeded", T0 + timedelta(minutes=1))
    _derive(session)
    _derive(session)
    row = session.scalars(select(rm.RunRollupHourly).where(rm.RunRollupHourly.tenant_id == "t1")).one()
    assert (row.started, row.succeeded) == (1, 1)


def test_an_event_that_commits_after_a_later_one_is_still_counted(session: Session) -> None:
    """A gap in the ids (a transaction still in flight) is remembered and folded when it appears."""
    _finish(session, "r1", "succeeded", T0 + timedelta(minutes=1))
    _derive(session)
    top = int(session.execute(text("SELECT MAX(id) FROM decision_events")).scalar_one())
    _finish(session, "r2", "succeeded", T0 + timedelta(minutes=2))
    session.execute(text("UPDATE decision_events SET id = id + 10 WHERE run_id = 'r2'"))  # leaves a gap
    _derive(session)
    _finish(session, "r3", "failed", T0 + timedelta(minutes=3), "dependency")
    session.execute(text("UPDATE decision_events SET id = :top + seq WHERE run_id = 'r3'"), {"top": top})
    _derive(session)  # r3's events landed in the gap: counted now
    row = session.scalars(select(rm.RunRollupHourly).where(rm.RunRollupHourly.tenant_id == "t1")).one()
    assert (row.started, row.succeeded, row.failed) == (3, 2, 1)
