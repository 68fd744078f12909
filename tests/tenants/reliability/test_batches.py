"""The deriver folds a batch set-based (one upsert per table and tenant, one per agent's health), yet every read
model row is exactly what folding the events one at a time gives, whatever the batch size: incidents that open
in one batch and close in another, a ring buffer of latest failures that wraps inside a batch, categories the
fold does not know, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, select
from sqlalchemy.orm import Session

from tenants.kit.settings import Settings
from tenants.migrations import upgrade
from tenants.reliability import models as rm
from tenants.reliability.derive import derive_once
from tests.tenants.reliability.history import History, Step, write_history
from tests.tenants.reliability.recount import read_models, recount

NOW = datetime(2026, 11, 20, 3, 30, 0, tzinfo=UTC)
TABLES = (rm.RunRollupHourly, rm.StepStatDaily, rm.FailureHourly, rm.AgentHealth, rm.LatestFailure,
          rm.ReliabilityCounter, rm.RunStartWait)
STATES = ["succeeded"] * 5 + ["failed"] * 3 + ["escalated", "budget_exhausted", "cancelled"]
CATEGORIES = ["dependency", "auth", "validation", None, "not-a-category"]


def _history(rng: random.Random, tenant: str, runs: int) -> list[History]:
    """Runs of three agents over the last 30 hours, a third of them bad (some finished out of time order)."""
    out = []
    for i in range(runs):
        started = NOW - timedelta(hours=30) + timedelta(minutes=12 * i + rng.randint(0, 5))
        if rng.random() < 0.1:  # a late writer: ended before the previous run, logged after it
            started -= timedelta(hours=1)
        state = rng.choice(STATES)
        bad = state in ("failed", "escalated", "budget_exhausted")
        steps = [Step(f"s{k}", ok=not (bad and k == 1), attempts=rng.randint(1, 3),
                      latency_ms=round(rng.uniform(1, 900), 3), category="dependency") for k in range(2)]
        reason = "x" * rng.choice([10, 600]) if bad else None
        out.append(History(f"run_{tenant}_{i:04d}", state, started, started + timedelta(seconds=rng.randint(1, 90)),
                           rng.choice(CATEGORIES) if bad else None, reason, Decimal("0.0125") * rng.randint(0, 9),
                           steps, agent=rng.choice(["a", "b", "c"]),
                           created=started - timedelta(seconds=rng.uniform(0, 40))))
    return out


def _snapshot(s: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every read-model row (floats to 6 places: a batch sums in memory before it adds)."""
    snap: dict[str, list[tuple[Any, ...]]] = {}
    for model in TABLES:
        columns = list(model.__table__.columns)
        rows = s.execute(select(*columns)).all()
        snap[model.__tablename__] = sorted(
            tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows)
    return snap


def _derive(s: Session, batch: int) -> dict[str, list[tuple[Any, ...]]]:
    for model in (*TABLES, rm.ReadModelCursor):
        s.execute(delete(model))
    while derive_once(s, now=NOW, batch=batch):
        pass
    s.flush()
    return _snapshot(s)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def own_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    """A database of this test's alone (the shared schema may hold other tests' committed runs, or get new ones
    from a process they left behind, between two derivations compared here)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'b.db'}"
    else:
        url = Settings(database_url=request.getfixturevalue("own_pg_schema")).sqlalchemy_url
    upgrade(url=url)
    engine = create_engine(url)
    with Session(engine) as s:
        yield s
        s.rollback()
    engine.dispose()


def test_every_batch_size_gives_the_rows_folding_one_event_at_a_time_gives(own_db: Session) -> None:
    session = own_db
    rng = random.Random(11)
    write_history(session, "tb1", _history(rng, "tb1", 170))  # about 60 failures: the ring buffer wraps
    write_history(session, "tb2", _history(rng, "tb2", 40))
    one_by_one = _derive(session, 1)
    assert len(one_by_one["latest_failures"]) == rm.LATEST_FAILURES_PER_TENANT + len(
        [r for r in one_by_one["latest_failures"] if r[0] == "tb2"])
    assert any(row[6] for row in one_by_one["agent_health"])  # incidents were closed
    for batch in (7, 64, 100_000):
        assert _derive(session, batch) == one_by_one, batch
    since = (NOW - timedelta(hours=2)).replace(second=0, microsecond=0)
    expected, got = recount(session, starts_since=since), read_models(session, starts_since=since)
    for name in expected:
        assert got[name] == expected[name], name


@pytest.mark.parametrize("batch", [1, 5000])
def test_an_incident_open_before_a_batch_is_closed_and_timed_inside_it(own_db: Session, batch: int) -> None:
    session = own_db
    t0 = NOW - timedelta(hours=3)
    first = [History("run_i1", "failed", t0, t0 + timedelta(minutes=1), "auth", "no"),
             History("run_i2", "cancelled", t0, t0 + timedelta(minutes=2))]
    write_history(session, "ti", first)
    while derive_once(session, now=NOW, batch=batch):
        pass
    write_history(session, "ti", [
        History("run_i3", "escalated", t0, t0 + timedelta(minutes=4), "state", "why"),
        History("run_i4", "succeeded", t0, t0 + timedelta(minutes=6)),
        History("run_i5", "failed", t0, t0 + timedelta(minutes=7), "auth", "no"),
        History("run_i6", "succeeded", t0, t0 + timedelta(minutes=10)),
        History("run_i7", "budget_exhausted", t0, t0 + timedelta(minutes=12), "budget", "spent")])
    while derive_once(session, now=NOW, batch=batch):
        pass
    session.flush()
    h = session.scalars(select(rm.AgentHealth).where(rm.AgentHealth.tenant_id == "ti")).one()
    ms = 60 * 1000
    assert (h.incidents, h.recovery_ms_sum) == (2, 5 * ms + 3 * ms)
    assert (h.open_since_ms, h.consecutive_failures, h.last_state) == (
        int((t0 + timedelta(minutes=12)).timestamp() * 1000), 1, "budget_exhausted")
    seqs = session.execute(select(rm.LatestFailure.seq, rm.LatestFailure.slot, rm.LatestFailure.run_id)
                           .where(rm.LatestFailure.tenant_id == "ti").order_by(rm.LatestFailure.seq)).all()
    assert [tuple(r) for r in seqs] == [(1, 0, "run_i1"), (2, 1, "run_i3"), (3, 2, "run_i5"), (4, 3, "run_i7")]
