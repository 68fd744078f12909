"""Each dialect pair (a SQLite repository and its PostgreSQL subclass) is picked by the session's database
and behaves the same on both: run submission, webhook claims, bulk loading, insert-or-ignore."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from tenants.kit.db import insert_ignore, unit_of_work
from tenants.kit.ids import new_id, utcnow
from tenants.rehearsals.repository import PostgresRehearsalRepository, RehearsalRepository, rehearsal_repository
from tenants.reliability.repository import BulkLoader, PostgresBulkLoader, bulk_loader
from tenants.runs.dispatch import DispatchRepository, PostgresDispatchRepository, dispatch_repository
from tenants.runs.journal import JournalRepository, PostgresJournalRepository, journal_repository
from tenants.runs.models import Run, RunItem
from tenants.runs.repository import PostgresRunRepository, RunRepository, run_repository
from tenants.scheduling.models import TenantSchedule
from tenants.webhooks.repository import (
    PostgresWebhookPlatformRepository,
    WebhookPlatformRepository,
    webhook_platform_repository,
)
from tests.conftest import Harness, Tenant

DBS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DBS)
def tenant(request: pytest.FixtureRequest, make_harness: Callable[..., Harness]) -> tuple[str, Tenant]:
    harness = make_harness(db=request.param, worker=None)
    return request.param, harness.onboard()


def test_each_factory_picks_the_implementation_of_the_sessions_database(tenant: tuple[str, Tenant]) -> None:
    db, t = tenant
    pairs: list[tuple[Callable[[Any], object], type, type]] = [
        (lambda s: journal_repository(s, t.id), JournalRepository, PostgresJournalRepository),
        (dispatch_repository, DispatchRepository, PostgresDispatchRepository),
        (lambda s: run_repository(s, t.id), RunRepository, PostgresRunRepository),
        (webhook_platform_repository, WebhookPlatformRepository, PostgresWebhookPlatformRepository),
        (bulk_loader, BulkLoader, PostgresBulkLoader),
        (lambda s: rehearsal_repository(s, t.id), RehearsalRepository, PostgresRehearsalRepository),
    ]
    with unit_of_work() as session:
        for factory, sqlite_cls, postgres_cls in pairs:
            assert type(factory(session)) is (postgres_cls if db == "postgres" else sqlite_cls)


def _run(tenant_id: str, version: Any, key: str | None) -> Run:
    now = utcnow()
    return Run(id=new_id("run"), tenant_id=tenant_id, agent_id=version.agent_id, agent_name="a",
               agent_version_id=version.id, agent_version=1, state="queued", input={"n": 1}, is_batch=False,
               items_total=1, items_done=0, items_failed=0, steps_done=0, llm_calls=0, cost_usd=Decimal(0),
               fence=0, crash_count=0, cancel_requested=False, suspend_requested=False, idempotency_key=key,
               request_hash="h", priority=3, runnable_at=now, event_seq=0, created_at=now, updated_at=now)


def test_submitting_a_run_creates_it_and_its_items_once_per_key(tenant: tuple[str, Tenant]) -> None:
    _, t = tenant
    from tenants.agents.service import store_version

    with unit_of_work() as session:
        version = store_version(session, t.id, "a", {"apiVersion": "midwatch/v1", "name": "a"}, []).version
    one, batch, again = _run(t.id, version, "k1"), _run(t.id, version, "k2"), _run(t.id, version, "k1")
    with unit_of_work() as session:
        repo = run_repository(session, t.id)
        assert repo.insert_run(one, [{"n": 1}])  # one item: one statement on PostgreSQL
        assert repo.insert_run(batch, [{"n": i} for i in range(3)])
        assert not repo.insert_run(again, [{"n": 1}])  # the same Idempotency-Key: nothing new
    with unit_of_work() as session:
        items = dict(session.execute(select(RunItem.run_id, func.count()).where(RunItem.tenant_id == t.id)
                                     .group_by(RunItem.run_id)).all())
        runs = session.scalar(select(func.count()).select_from(Run).where(Run.tenant_id == t.id))
    assert runs == 2 and items == {one.id: 1, batch.id: 3}


def test_a_submission_finds_the_latest_or_the_asked_version_with_the_agents_gate(tenant: tuple[str, Tenant]) -> None:
    from tenants.agents.models import VersionRef
    from tenants.agents.service import store_version
    from tenants.rehearsals.service import set_policy

    _, t = tenant
    with unit_of_work() as session:
        spec = {"apiVersion": "midwatch/v1", "name": "a"}
        first = store_version(session, t.id, "a", spec, []).version
        second = store_version(session, t.id, "a", {**spec, "description": "v2"}, []).version
    with unit_of_work() as session:
        repo = rehearsal_repository(session, t.id)
        assert repo.version_with_policy("a", None) == (VersionRef(second.id, second.agent_id, 2), False,
                                                       "realistic")
        assert repo.version_with_policy("a", 1) == (VersionRef(first.id, first.agent_id, 1), False, "realistic")
        assert repo.version_with_policy("a", 3) is None
        assert repo.version_with_policy("b", None) is None
        assert rehearsal_repository(session, "another-tenant").version_with_policy("a", None) is None
        set_policy(session, t.id, "a", requires_rehearsal=True, min_profile="hostile", actor="test")
    with unit_of_work() as session:
        assert rehearsal_repository(session, t.id).version_with_policy("a", None) == (
            VersionRef(second.id, second.agent_id, 2), True, "hostile")


def test_due_webhook_deliveries_are_claimed_once_until_their_claim_expires(tenant: tuple[str, Tenant]) -> None:
    _, t = tenant
    from tenants.webhooks.service import create_endpoint, emit

    with unit_of_work() as session:
        create_endpoint(session, t.id, "https://hooks.example.com/in", ["run.failed"])
        emitted = emit(session, t.id, "run.failed", {"run_id": "r1"})
    now = utcnow() + timedelta(seconds=1)
    with unit_of_work() as session:
        claimed = webhook_platform_repository(session).claim_due(now, 10, now + timedelta(seconds=60))
    mine = [c for c in claimed if c.tenant_id == t.id]
    assert [c.id for c in mine] == emitted and mine[0].attempt == 1
    with unit_of_work() as session:  # claimed: not due again before the claim expires
        again = webhook_platform_repository(session).claim_due(now, 10, now + timedelta(seconds=60))
    assert [c for c in again if c.tenant_id == t.id] == []


def test_bulk_loading_and_insert_or_ignore_write_each_row_once(tenant: tuple[str, Tenant]) -> None:
    _, t = tenant
    rows = [{"tenant_id": t.id, "weight": 2, "vtime": 0.0, "avg_slice_s": 0.5, "running": 0, "updated_at": utcnow()}]
    with unit_of_work() as session:
        session.execute(TenantSchedule.__table__.delete().where(TenantSchedule.tenant_id == t.id))
        assert bulk_loader(session).load("tenant_schedules", rows) == 1
        assert bulk_loader(session).load("tenant_schedules", []) == 0
        session.execute(insert_ignore(session, TenantSchedule, "tenant_id").values(**{**rows[0], "weight": 9}))
    with unit_of_work() as session:
        weights = session.scalars(select(TenantSchedule.weight).where(TenantSchedule.tenant_id == t.id)).all()
    assert weights == [2]  # the conflicting insert was ignored, not applied
