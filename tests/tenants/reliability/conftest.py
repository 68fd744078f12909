"""A fresh database per test, on SQLite and on PostgreSQL (a schema shared by the session, emptied after)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tenants.kit.settings import Settings
from tenants.migrations import upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = Settings(database_url=request.getfixturevalue("pg_schema_url")).sqlalchemy_url
    upgrade(url=url)
    engine = create_engine(url)
    with Session(engine) as s:
        yield s
        s.rollback()
    if request.param == "postgres":
        with engine.begin() as conn:
            for table in ("run_rollups_hourly", "step_stats_daily", "failures_hourly", "agent_health",
                          "latest_failures", "reliability_counters", "read_model_cursors", "run_start_waits",
                          "decision_events", "run_items", "runs", "agent_schedules", "tenant_schedules"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
    engine.dispose()
