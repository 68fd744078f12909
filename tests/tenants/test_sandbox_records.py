"""sandbox.record ids are numbered per tenant (issue 16, item 8): one tenant's ids say nothing about another's
volume, also under concurrent writers, and the migration numbers existing records."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tenants.kit.db import unit_of_work
from tenants.sandbox.service import record_effect
from tests.conftest import Harness


def _ids(h: Harness, headers: dict[str, str]) -> list[int]:
    return [r["id"] for r in h.client.get("/v1/sandbox/records", headers=headers).json()["data"]]


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_record_ids_count_per_tenant_and_concurrent_writers_get_distinct_numbers(
        make_harness: Callable[..., Harness], db: str) -> None:
    h = make_harness(db=db, worker=None)
    busy, quiet = h.onboard(), h.onboard()
    for i in range(5):
        with unit_of_work() as session:
            record_effect(session, busy.id, f"k{i}", {"n": i})
    with unit_of_work() as session:
        assert record_effect(session, quiet.id, "q0", {}) is True
        assert record_effect(session, quiet.id, "q0", {}) is False  # the same key: acknowledged, not added
    assert _ids(h, busy.headers) == [1, 2, 3, 4, 5]
    assert _ids(h, quiet.headers) == [1], "the quiet tenant's first record reveals the busy tenant's volume"

    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with unit_of_work() as session:
                record_effect(session, quiet.id, f"c{n}", {"n": n})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert _ids(h, quiet.headers) == list(range(1, 14))
    page = h.client.get("/v1/sandbox/records?limit=5&cursor=5", headers=quiet.headers).json()
    assert [r["id"] for r in page["data"]] == [6, 7, 8, 9, 10] and page["next_cursor"] == "10"


def test_the_migration_numbers_existing_records_per_tenant(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from tenants.migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    config: Config = alembic_config(url)
    command.upgrade(config, "0001")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for tenant, key in (("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("a", "3")):
            conn.execute(sa.text("INSERT INTO sandbox_records (tenant_id, idempotency_key, created_at) "
                                 "VALUES (:t, :k, '2026-01-01 00:00:00')"), {"t": tenant, "k": key})
    command.upgrade(config, "0003")
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT tenant_id, seq FROM sandbox_records ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
