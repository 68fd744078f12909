"""Per-tenant queue figures, on SQLite and PostgreSQL: what is due now splits into runs waiting for a worker and
runs held at a concurrency cap, with the oldest wait; time-to-start over the last hour comes from the derived
histogram within 5 % of the exact nearest-rank figure, over exactly the window the definition names."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenants.reliability import models as rm
from tenants.reliability.derive import derive_once
from tenants.reliability.queues import tenant_queues
from tenants.runs.dispatch import dispatch_repository
from tenants.scheduling.repository import ScheduleRepository
from tests.tenants.reliability.history import History, ensure_tenant, write_history
from tests.tenants.reliability.recount import read_models, recount

NOW = datetime(2026, 11, 20, 3, 30, 0, tzinfo=UTC)
NAMES = {"qa": "alpha", "qb": "beta", "qc": "gamma", "qd": "idle"}


def _ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def _queued(agent: str, *ages: float) -> list[History]:
    return [History(f"run_q{agent}{a}", None, None, created=_ago(a), runnable_at=_ago(a), agent=agent) for a in ages]


def _derive(s: Session, now: datetime = NOW) -> None:
    while derive_once(s, now=now, batch=7):
        pass
    s.flush()


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_due_runs_split_into_waiting_and_capped_with_the_oldest_wait(session: Session) -> None:
    for tenant, agent in (("qa", "bulk"), ("qb", "bulk"), ("qc", "slow"), ("qc", "fast"), ("qd", "bulk")):
        ensure_tenant(session, tenant, agent)
    ScheduleRepository(session, "qb").set_caps(1, {})  # as the budgets service mirrors concurrent_runs limits
    ScheduleRepository(session, "qc").set_caps(None, {"slow": 1})
    write_history(session, "qb", _queued("bulk", 60, 120, 240))
    claimed = dispatch_repository(session).claim("w1", NOW, 300.0)  # beta's oldest takes its only slot
    assert claimed is not None and claimed.tenant_id == "qb" and claimed.created_at == _ago(240)
    write_history(session, "qc", _queued("slow", 180, 60))
    claimed = dispatch_repository(session).claim("w1", NOW, 300.0)  # beta is at its cap: gamma's oldest slow run
    assert claimed is not None and claimed.tenant_id == "qc" and claimed.agent_name == "slow"
    write_history(session, "qc", _queued("fast", 30))
    write_history(session, "qa", _queued("bulk", 30, 720))
    write_history(session, "qa", [History("run_later", None, None, created=_ago(60),
                                          runnable_at=NOW + timedelta(minutes=5))])  # due later: not counted
    figures = [q for q in tenant_queues(session, NAMES, NOW) if q.tenant_id in NAMES]  # the schema is shared
    got = {q.tenant: (q.waiting, q.capped, q.oldest_waiting_s, q.running, q.cap) for q in figures}
    assert got == {"alpha": (2, 0, 720.0, 0, None), "beta": (0, 2, 120.0, 1, 1), "gamma": (1, 1, 60.0, 1, None),
                   "idle": (0, 0, None, 0, None)}
    assert [q.tenant for q in figures] == ["alpha", "beta", "gamma", "idle"]  # the longest wait first
    assert [q.overdue for q in figures] == [True, False, False, False]  # over 5 minutes


WAITS_S = [0.0005, 0.05, 1.2, 3.3, 7.5, 42.0, 99.0, 240.0, 600.0, 3600.0, 9600.0]


def test_time_to_start_is_the_last_hours_first_starts_within_5_percent(session: Session) -> None:
    ensure_tenant(session, "qt", "a")
    window_start = NOW - timedelta(minutes=59)  # 02:31:00: the current minute and the 59 before it
    runs = [History(f"run_t{i}", "succeeded", window_start + timedelta(minutes=i * 5), None,
                    created=window_start + timedelta(minutes=i * 5, seconds=-wait)) for i, wait in enumerate(WAITS_S)]
    runs.append(History("run_edge_in", "succeeded", window_start, None, created=window_start - timedelta(seconds=5)))
    runs.append(History("run_edge_out", "succeeded", window_start - timedelta(microseconds=1), None,
                        created=window_start - timedelta(seconds=9000)))  # 02:30:59.999999: the minute before
    runs.append(History("run_old", "succeeded", NOW - timedelta(hours=3), None,
                        created=NOW - timedelta(hours=4)))  # older than the two hours kept: never stored
    write_history(session, "qt", runs)
    _derive(session)
    q = next(q for q in tenant_queues(session, {"qt": "t"}, NOW) if q.tenant_id == "qt")
    counted = [*WAITS_S, 5.0]
    assert q.started == len(counted)
    assert q.start_p50_s == pytest.approx(_nearest_rank(counted, 0.5), rel=0.05)
    assert q.start_p95_s == pytest.approx(_nearest_rank(counted, 0.95), rel=0.05)
    since = NOW - timedelta(hours=2)
    stored = read_models(session, {"qt"}, starts_since=since)["starts"]
    assert stored == recount(session, {"qt"}, starts_since=NOW - timedelta(minutes=119))["starts"]
    assert sum(n for *_, n in stored) == len(counted) + 1  # the edge-out start is stored, outside the window


def test_time_to_start_minutes_older_than_two_hours_are_pruned(session: Session) -> None:
    ensure_tenant(session, "qp", "a")
    write_history(session, "qp", [History("run_p1", "succeeded", NOW, None, created=NOW - timedelta(seconds=2))])
    _derive(session)
    write_history(session, "qp", [History("run_p2", "succeeded", NOW + timedelta(hours=3), None,
                                           created=NOW + timedelta(hours=3, seconds=-4))])
    _derive(session, NOW + timedelta(hours=3, minutes=1))
    rows = session.scalars(select(rm.RunStartWait).where(rm.RunStartWait.tenant_id == "qp")).all()
    assert [(r.minute, r.runs) for r in rows] == [(NOW + timedelta(hours=3), 1)]
