"""Dashboard benchmark: 1,000,000 runs across 100 tenants in PostgreSQL; Overview and Reliability must render
in under 2 s (AppTest, cold cache: every figure read from the database).

    uv run python -m benchmarks.dashboard [--runs 1000000] [--tenants 100] [--keep]

Uses ``MIDWATCH_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and a
dedicated schema, dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
TARGET_S = 2.0
TABLES = ["runs", "run_items", "decision_events", "run_rollups_hourly", "step_stats_daily", "failures_hourly",
          "latest_failures", "agent_health"]


def _render(at, page: str) -> float:
    import streamlit as st

    st.cache_data.clear()  # cold: every figure comes from the database
    started = time.perf_counter()
    at.switch_page(page).run()
    elapsed = time.perf_counter() - started
    assert not at.exception, at.exception
    return elapsed


def _measure(operator_key: str, repeat: int, runs: int, tenants: int) -> dict[str, dict[str, float]]:
    """Sign in, then render Overview and Reliability ``repeat`` times each (cold): median and max seconds."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.text_input(key="operator_key").input(operator_key)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    figures: dict[str, dict[str, float]] = {}
    for name, page in (("overview", "views/overview.py"), ("reliability", "views/reliability.py")):
        times = [_render(at, page) for _ in range(repeat)]
        figures[name] = {"median_s": statistics.median(times), "max_s": max(times)}
        verdict = "ok" if figures[name]["median_s"] < TARGET_S else "TOO SLOW"
        print(f"dashboard {name}: {figures[name]['median_s'] * 1000:.0f} ms median of {repeat} cold renders "
              f"(max {figures[name]['max_s'] * 1000:.0f} ms; target < {TARGET_S * 1000:.0f} ms) {verdict} — "
              f"{runs:,} runs, {tenants} tenants", flush=True)
    return figures


def _configure(url: str) -> str:
    """This process on ``url`` alone (no other MIDWATCH_* setting); returns the operator key it set."""
    from tenants.kit.db import reset_engine
    from tenants.kit.settings import reset_settings

    for key in [k for k in os.environ if k.startswith("MIDWATCH_")]:
        del os.environ[key]
    operator_key = f"mw_op_bench_{secrets.token_urlsafe(24)}"
    os.environ.update({"MIDWATCH_DATABASE_URL": url, "MIDWATCH_LOG_LEVEL": "warning",
                       "MIDWATCH_OPERATOR_KEY": operator_key})
    reset_settings()  # a benchmark run before this one in the same process may have left its settings cached
    reset_engine()
    return operator_key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the schema (prints its URL)")
    args = parser.parse_args()

    import psycopg

    base = os.environ.get("MIDWATCH_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"mwbench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"
    operator_key = _configure(url)
    try:
        from dashboard.seed import seed
        from tenants.accounts.service import ensure_operator_key
        from tenants.kit.db import unit_of_work
        from tenants.migrations import upgrade
        from tenants.reliability.service import table_count

        upgrade()
        with unit_of_work() as session:
            ensure_operator_key(session, operator_key)
        print(f"seeding {args.runs:,} runs across {args.tenants} tenants into schema {schema} ...", flush=True)
        report = seed(args.runs, args.tenants)
        with unit_of_work() as session:
            session.connection().exec_driver_sql("ANALYZE")
            counts = {name: table_count(session, name) for name in TABLES}
        print(f"seeded in {report.seconds:.1f} s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)

        figures = _measure(operator_key, args.repeat, counts["runs"], args.tenants)
        result = {"benchmark": "dashboard", "at": datetime.now(UTC).isoformat(), "runs": args.runs,
                  "tenants": args.tenants, "seed_seconds": report.seconds, "row_counts": counts,
                  "pages": figures, "target_s": TARGET_S,
                  "ok": all(f["median_s"] < TARGET_S for f in figures.values())}
        out = ROOT / "benchmarks" / "results" / f"dashboard-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out.relative_to(ROOT)}", flush=True)
        return 0 if result["ok"] else 1
    finally:
        from tenants.kit.db import reset_engine

        reset_engine()
        if args.keep:
            print(f"kept schema: MIDWATCH_DATABASE_URL='{url}'")
        else:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    raise SystemExit(main())
