"""budget_race: 200 concurrent reservations against a budget with room for exactly 50.

Target: exactly 50 granted and 0 overspend. Each reservation runs in its own thread and its own
transaction, all released at once by a barrier, against a real PostgreSQL (default) or SQLite.

    uv run python -m benchmarks.budget_race [--db postgres|sqlite] [--workers 200] [--room 50]

PostgreSQL comes from MIDWATCH_BENCH_POSTGRES_URL (else MIDWATCH_TEST_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/test); a throwaway schema is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

PRICE = Decimal("0.10")
RESULTS = Path(__file__).resolve().parent / "results"


def _configure(db: str, workdir: Path) -> tuple[str, str | None]:
    """Point this process's settings at a fresh database; returns (url, schema to drop)."""
    os.environ["MIDWATCH_DATA_DIR"] = str(workdir)
    os.environ["MIDWATCH_LOG_LEVEL"] = "warning"
    schema = None
    if db == "postgres":
        import psycopg

        base = os.environ.get("MIDWATCH_BENCH_POSTGRES_URL") or os.environ.get(
            "MIDWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        schema = f"mwbench_{secrets.token_hex(4)}"
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in base else "?"
        os.environ["MIDWATCH_DATABASE_URL"] = f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    else:
        os.environ.pop("MIDWATCH_DATABASE_URL", None)
    from tenants.kit.db import reset_engine
    from tenants.kit.settings import reset_settings

    reset_settings()
    reset_engine()
    return os.environ.get("MIDWATCH_DATABASE_URL", "sqlite"), schema


def _drop_schema(schema: str) -> None:
    import psycopg

    base = os.environ.get("MIDWATCH_BENCH_POSTGRES_URL") or os.environ.get(
        "MIDWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run(db: str, workers: int, room: int) -> dict[str, Any]:
    """Run the race once; returns the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        _, schema = _configure(db, Path(tmp))
        try:
            return _race(db, workers, room)
        finally:
            from tenants.kit.db import reset_engine

            reset_engine()
            if schema:
                _drop_schema(schema)


def reserve_at_once(tenant_id: str, agent: str, workers: int, price: Decimal) -> tuple[int, list[str], list[float]]:
    """``workers`` threads, each in its own transaction, reserve ``price`` of cost_usd at the same moment:
    how many were granted, the unexpected errors, each reservation's latency (seconds)."""
    from tenants.budgets.service import reserve
    from tenants.kit.db import unit_of_work
    from tenants.kit.errors import BudgetExhausted

    barrier = threading.Barrier(workers)
    latencies: list[float] = []
    errors: list[str] = []

    def one(i: int) -> bool:
        barrier.wait()
        started = time.perf_counter()
        try:
            with unit_of_work() as session:
                reserve(session, tenant_id, agent, "cost_usd", price, f"race-{i}")
            return True
        except BudgetExhausted:
            return False
        except Exception as exc:  # reported, and fails the benchmark (or the test)
            errors.append(f"{type(exc).__name__}: {exc}")
            return False
        finally:
            latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        granted = sum(pool.map(one, range(workers)))
    return granted, errors, latencies


def _race(db: str, workers: int, room: int) -> dict[str, Any]:
    from tenants.accounts.service import onboard_tenant
    from tenants.budgets.models import Budget
    from tenants.budgets.service import LimitSpec, set_limits
    from tenants.kit.db import unit_of_work
    from tenants.migrations import upgrade

    upgrade()
    limit = PRICE * room
    with unit_of_work() as session:
        tenant, _ = onboard_tenant(session, f"bench-{secrets.token_hex(4)}")
        tenant_id = tenant.id
        set_limits(session, tenant_id, [LimitSpec(metric="cost_usd", limit=limit, period="day")])

    started = time.perf_counter()
    granted, errors, latencies = reserve_at_once(tenant_id, "bench", workers, PRICE)
    wall = time.perf_counter() - started
    with unit_of_work() as session:
        ledger = session.query(Budget).filter(Budget.tenant_id == tenant_id).one()
        used, reserved, lim = ledger.used, ledger.reserved, ledger.limit
    overspend = max(Decimal(0), used + reserved - lim)
    latencies.sort()
    return {
        "name": "budget_race",
        "db": db,
        "workers": workers,
        "room": room,
        "granted": granted,
        "refused": workers - granted - len(errors),
        "errors": errors[:5],
        "limit": format(lim.normalize(), "f"),
        "used_plus_reserved": format((used + reserved).normalize(), "f"),
        "overspend": f"{overspend:.2f}",
        "wall_s": round(wall, 3),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "ok": granted == room and overspend == 0 and not errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.budget_race", description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--room", type=int, default=50)
    args = parser.parse_args(argv)
    result = run(args.db, args.workers, args.room)
    print(f"budget_race: {result['workers']} concurrent reservations, room for {result['room']} -> "
          f"granted {result['granted']}, overspend {result['overspend']}")
    print(f"budget_race: {result['db']}, wall {result['wall_s']} s, p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms per reservation (including the wait for a connection)")
    if result["errors"]:
        print(f"budget_race: errors: {result['errors']}", file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"budget_race-{args.db}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
