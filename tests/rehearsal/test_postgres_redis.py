"""On PostgreSQL + Redis the rehearsal space is a throwaway schema and a Redis namespace of its own: its worker
is killed, its queue dropped, and nothing of it is left afterwards."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text

from runner.rehearsal import RehearsalOptions, profile_from, source_from_agent
from runner.rehearsal.orchestrate import carry_out
from runner.rehearsal.report import build_report
from runner.sandbox_upstream import FaultyUpstream
from tests.conftest import Harness
from tests.rehearsal.conftest import FAST_PLATFORM, TEST_PROFILE, put_agent, put_real_secret

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_a_rehearsal_on_postgresql_and_redis_uses_a_throwaway_schema_and_queue_and_leaves_nothing(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream) -> None:
    import redis

    from tenants.kit.db import read_only
    from tenants.kit.ids import utcnow
    from tenants.kit.settings import get_settings

    h = make_harness(db="postgres", broker="redis", worker=None, extra=FAST_PLATFORM)
    started = utcnow()  # the session's schema holds other tests' runs: count only what happens from here
    tenant = h.onboard()
    put_real_secret(h, tenant)
    put_agent(h, tenant, upstream, hardened=True)
    settings = get_settings()
    # the database "restart" is a harmless command here: the shared test database must not be restarted
    options = RehearsalOptions(profile=profile_from(TEST_PROFILE), items=5, repeat=2, seed=11, timeout_s=120,
                               restart_database=["true"])
    observed = carry_out(settings, source_from_agent(tenant.name, "refunds"), options)
    report = build_report(observed)

    platform = report["figures"]["platform"]
    assert platform["worker_kill"]["killed"] and platform["worker_kill"]["progressed_again"], platform
    assert platform["queue"] == "dropped: every message of the rehearsal's Redis queue deleted"
    assert isinstance(platform["dropped_messages"], int) and platform["worker_starts"] == 2
    assert platform["database_restart"] == {"command": "true", "exit_code": 0}
    assert report["figures"]["end_to_end"]["tries"] == 10 and report["figures"]["side_effects"]["duplicates"] == 0
    assert upstream.requests == []
    with read_only() as session:
        schemas = session.execute(text("SELECT schema_name FROM information_schema.schemata "
                                       "WHERE schema_name LIKE 'mw_rehearsal_%'")).scalars().all()
        runs = session.execute(text("SELECT count(*) FROM runs WHERE created_at >= :t"), {"t": started}).scalar()
    assert f"mw_rehearsal_{observed.rehearsal_id.lower()}" not in schemas, schemas  # its schema was dropped
    assert runs == 0  # the installation's own tables never saw a rehearsal run (the test submits none)
    client = redis.Redis.from_url(settings.broker_url)
    assert list(client.scan_iter(match=f"mw-rehearsal-{observed.rehearsal_id}:*")) == []


def test_a_database_restart_is_offered_only_against_a_database_named_disposable() -> None:
    import argparse

    from midwatch.rehearse_cli import _restart_command
    from runner.errors import RehearsalError
    from tenants.kit.settings import Settings

    pg = Settings(database_url="postgresql://postgres@db.internal:5432/staging")

    def ask(restart: str | None, disposable: str | None, settings: Settings = pg) -> list[str] | None:
        return _restart_command(settings, argparse.Namespace(restart_database=restart, disposable=disposable))

    with pytest.raises(RehearsalError, match="confirm it is disposable with --disposable staging"):
        ask("docker restart pg", None)
    with pytest.raises(RehearsalError, match="--disposable staging"):
        ask("docker restart pg", "production")
    with pytest.raises(RehearsalError, match="only goes with --restart-database"):
        ask(None, "staging")
    with pytest.raises(RehearsalError, match="no server to restart"):
        ask("true", "midwatch", Settings())
    assert ask("docker restart pg-staging", "staging") == ["docker", "restart", "pg-staging"]
    assert ask(None, None) is None


def test_schemas_left_by_a_rehearsal_whose_process_died_are_dropped_and_live_ones_kept(pg_schema_url: str) -> None:
    import time

    import psycopg

    from tenants.kit.ids import new_id
    from tenants.rehearsals.space import SCHEMA_PREFIX, drop_orphan_schemas

    old = f"{SCHEMA_PREFIX}rhr_{int((time.time() - 7200) * 1000):012x}0123456789ab"
    live = SCHEMA_PREFIX + new_id("rhr")
    url = pg_schema_url.split("?", maxsplit=1)[0]
    with psycopg.connect(url, autocommit=True) as conn:
        for name in (old, live):
            conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        assert drop_orphan_schemas(pg_schema_url) >= 1
        with psycopg.connect(url) as conn:
            left = {r[0] for r in conn.execute("SELECT schema_name FROM information_schema.schemata")}
        assert old not in left and live in left
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in (old, live):
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
