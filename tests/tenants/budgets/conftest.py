"""Budget fixtures: a migrated database (SQLite, and PostgreSQL for the production path) with real
tenants onboarded through the API, and helpers to set limits and read ledger rows."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from tenants.budgets.models import Budget
from tenants.budgets.service import LimitSpec, set_limits
from tenants.kit.db import unit_of_work
from tests.conftest import Harness, api_harness


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A migrated Midwatch database and API on each backend, shared by a module's tests (each test
    onboards its own tenant, and tenants see nothing of each other), with no workers: the tests
    drive the budget service directly, as the engine will."""
    env = {
        "MIDWATCH_DATA_DIR": str(tmp_path_factory.mktemp("budgets") / "data"),
        "MIDWATCH_OPERATOR_KEY": f"mw_op_test_{secrets.token_urlsafe(24)}",
        "MIDWATCH_LOG_LEVEL": "warning",
        "MIDWATCH_HEALTH_PORT": "0",
        "MIDWATCH_RATE_LIMIT_PER_MINUTE": "1000000",  # shared keys, many requests; the limit is tested elsewhere
    }
    if request.param == "postgres":
        env["MIDWATCH_DATABASE_URL"] = request.getfixturevalue("pg_schema_url")
    with pytest.MonkeyPatch.context() as patch, api_harness(patch, env) as harness:
        yield harness


def limit(metric: str, value: str | int, period: str | None = "day", timezone: str = "UTC",
          agent: str | None = None) -> LimitSpec:
    return LimitSpec(metric=metric, limit=value, period=None if metric == "concurrent_runs" else period,
                     timezone=timezone, agent=agent)


def set_budget(tenant_id: str, *specs: LimitSpec) -> None:
    with unit_of_work() as session:
        set_limits(session, tenant_id, list(specs))


def ledgers(tenant_id: str, metric: str | None = None) -> list[Budget]:
    with unit_of_work() as session:
        q = select(Budget).where(Budget.tenant_id == tenant_id)
        if metric:
            q = q.where(Budget.metric == metric)
        return list(session.scalars(q.order_by(Budget.period_start)).all())


def one_ledger(tenant_id: str, metric: str) -> Budget:
    rows = ledgers(tenant_id, metric)
    assert len(rows) == 1, rows
    return rows[0]


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def d(value: str) -> Decimal:
    return Decimal(value)
