"""Migration 0004: an agent loop stopped mid-way at the upgrade keeps its checkpoints. Each former row (one
per iteration, the model's JSON reply naming one tool) becomes a model turn with one tool call and that call's
result, which the engine replays instead of calling the tool again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import fresh_pg_schema

LEGACY = ("INSERT INTO loop_calls (run_id, item_index, step_index, iteration, tenant_id, tool, args, reply, output, "
          "fence, created_at) VALUES ('run_1', 0, 2, :it, 'ten_1', :tool, :args, :reply, :output, 3, "
          "'2026-01-01 00:00:00')")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL schema of its own (this test migrates down and up)."""
    with fresh_pg_schema("mwm") as url:
        yield url


def _migrate(url: str) -> list[dict[str, object]]:
    from alembic import command

    from tenants.migrations import alembic_config

    config = alembic_config(url)
    command.upgrade(config, "0003")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # rows without a parent run (SQLite does not check)
            conn.execute(sa.text("ALTER TABLE loop_calls DROP CONSTRAINT fk_loop_calls_run_id_runs"))
        for it, tool, args, output in ((1, "crm.lookup", {"order": 42}, {"status": "shipped"}),
                                       (2, "sandbox.record", {"note": "ok"}, {"recorded": True})):
            conn.execute(sa.text(LEGACY), {"it": it, "tool": tool, "args": json.dumps(args),
                                           "reply": json.dumps({"tool": tool, "args": args}),
                                           "output": json.dumps(output)})
    command.upgrade(config, "0004")
    with engine.begin() as conn:
        rows = conn.execute(sa.text(
            "SELECT iteration, call_index, call_id, tool, args, message, is_error, cost_usd, llm_calls, fence "
            "FROM loop_calls ORDER BY iteration, call_index")).mappings().all()
    engine.dispose()
    return [dict(r) for r in rows]


def _check(rows: list[dict[str, object]]) -> None:
    assert [(r["iteration"], r["call_index"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    turn = json.loads(str(rows[0]["message"]))
    assert turn == {"role": "assistant", "content": "",
                    "tool_calls": [{"id": "legacy-1", "name": "crm.lookup", "arguments": {"order": 42}}]}
    result = rows[1]
    assert (result["call_id"], result["tool"], json.loads(str(result["message"]))) == (
        "legacy-1", "crm.lookup", {"status": "shipped"})
    args = result["args"] if isinstance(result["args"], dict) else json.loads(str(result["args"]))
    assert args == {"order": 42} and not result["is_error"] and result["fence"] == 3
    assert all(int(str(r["llm_calls"])) == 0 for r in rows) and rows[0]["args"] is None


def test_former_loop_rows_become_a_turn_and_its_call_on_sqlite(tmp_path: Path) -> None:
    _check(_migrate(f"sqlite:///{tmp_path / 'm.db'}"))


@pytest.mark.postgres
def test_former_loop_rows_become_a_turn_and_its_call_on_postgresql(pg_url: str) -> None:
    _check(_migrate(pg_url))

