"""The seed writes base data only (runs, decision events): its read models are what the deriver folds from
them, and equal an independent recount of the base tables. Its live queue gives every queue profile something
to show."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import SeededDb
from tests.tenants.reliability.recount import read_models, recount


def test_seeded_read_models_equal_a_recount_of_the_decision_log(seeded_db: SeededDb) -> None:
    from tenants.kit.db import read_only
    from tenants.kit.ids import utcnow

    # time-to-start minutes well inside the two hours the deriver keeps (its horizon moved since the seed)
    since = (utcnow() - timedelta(hours=2, minutes=-5)).replace(second=0, microsecond=0)
    with read_only() as s:
        expected = recount(s, starts_since=since)
        got = read_models(s, starts_since=since)
    for name in expected:
        assert got[name] == expected[name], name
    assert len(expected["hours"]) > 100 and len(expected["steps"]) > 100 and expected["failures"]
    assert expected["starts"]


def test_seeded_specs_are_valid_agent_specs(seeded_db: SeededDb) -> None:
    from runner.spec import load_spec
    from tenants.kit.db import read_only
    from tenants.reliability.repository import PlatformReliabilityRepository

    with read_only() as s:
        specs = PlatformReliabilityRepository(s).latest_specs()
    assert specs
    for _, name, _, spec in specs:
        assert load_spec(spec).name == name


def test_the_seeded_queue_follows_each_tenants_profile(seeded_db: SeededDb) -> None:
    """A flood tenant's backlog waits past the Overview's threshold, a capped tenant's runs are held at its
    limit, steady tenants wait seconds; recent starts waited as long as the profile says."""
    from sqlalchemy import select

    from dashboard.seed import FLOOD_OLDEST_S, queue_profile
    from tenants.accounts.models import Tenant
    from tenants.kit.db import read_only
    from tenants.kit.ids import utcnow
    from tenants.reliability.queues import QUEUE_ALERT_AFTER_S, tenant_queues
    from tenants.runs.models import Run

    now = seeded_db.seeded_at or utcnow()  # the queue as the seed left it, however long ago that was
    with read_only() as s:
        tenants = s.execute(select(Tenant.id, Tenant.name).where(Tenant.name != "facts").order_by(Tenant.id)).all()
        profiles = {str(tid): queue_profile(i) for i, (tid, _) in enumerate(tenants)}
        queues = {q.tenant_id: q for q in tenant_queues(s, {str(t): str(n) for t, n in tenants}, now)}
        recent = s.execute(select(Run.tenant_id, Run.created_at, Run.started_at)
                           .where(Run.started_at >= now - timedelta(hours=3))).all()
    assert sorted(set(profiles.values())) == ["capped", "flood", "steady"]
    for tid, profile in profiles.items():
        q = queues[tid]
        if profile == "flood":
            assert q.waiting >= 8 and q.capped == 0
            assert q.oldest_waiting_s == pytest.approx(FLOOD_OLDEST_S) and FLOOD_OLDEST_S > QUEUE_ALERT_AFTER_S
        elif profile == "capped":
            assert q.waiting == 0 and q.capped == 3 and q.cap == q.running
        else:
            assert q.capped == 0 and (q.oldest_waiting_s or 0) <= 40
    ages = {round(q.oldest_waiting_s or 0) for q in queues.values() if q.depth}
    assert len(ages) >= 3  # queued runs of different ages
    waits: dict[str, list[float]] = {}
    for tid, created, started in recent:
        if str(tid) in profiles:
            waits.setdefault(profiles[str(tid)], []).append((started - created).total_seconds())
    assert min(waits["flood"]) >= 20 and max(waits["steady"]) < 60


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_seeds_fold_from_memory_gives_the_rows_reading_the_log_back_gives(
        db: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed folds each loaded batch from its rows in memory (derive_written); wiping the read models and
    deriving the same log again the usual way (derive_all reads it back) gives the same rows, column for column
    (float sums to 1e-6: the two add the same latencies in different batches)."""
    from sqlalchemy import delete, select

    import dashboard.seed as seed_module
    from tenants.kit.db import read_only, unit_of_work
    from tenants.kit.ids import utcnow
    from tenants.reliability import models as rm
    from tenants.reliability.derive import derive_all
    from tenants.reliability.repository import DeriverRepository
    from tests.dashboard.conftest import _database

    tables = (rm.RunRollupHourly, rm.StepStatDaily, rm.FailureHourly, rm.AgentHealth, rm.LatestFailure,
              rm.ReliabilityCounter, rm.RunStartWait, rm.ReadModelCursor)

    def snapshot() -> dict[str, list[tuple[Any, ...]]]:
        with read_only() as s:
            return {m.__tablename__: sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in row)
                                            for row in s.execute(select(*m.__table__.columns)).all())
                    for m in tables if m is not rm.ReadModelCursor}

    reads: list[int] = []
    events = DeriverRepository.events
    monkeypatch.setattr(DeriverRepository, "events", lambda self, *a: reads.append(1) or events(self, *a))
    monkeypatch.setattr(seed_module, "BATCH", 97)  # many loads, each folded in its own transaction
    url = request.getfixturevalue("own_pg_schema") if db == "postgres" else None
    (tmp_path / "data").mkdir()
    with _database(tmp_path / "data", url):
        now = utcnow()
        report = seed_module.seed(400, 3, now=now)
        assert not reads and report.rows["events_derived"] == report.rows["decision_events"] > 2000
        from_memory = snapshot()
        with unit_of_work() as s:
            for model in tables:
                s.execute(delete(model))
        assert derive_all(batch=500, now=now) == report.rows["decision_events"] and reads
        assert snapshot() == from_memory
    assert len(from_memory["latest_failures"]) > 20 and len(from_memory["agent_health"]) >= 3
