"""loop_calls: one row per model turn and per tool call of an agent loop, keyed by (iteration, call_index)

An agent loop's model turn may ask for several tool calls; each is checkpointed on its own, so a crash
between two calls of one turn replays the first instead of repeating it. ``call_index`` 0 is the model
turn itself (the assistant message, exactly as it was sent back to the model, the alias that answered,
its model calls and what the budget ledger charged for them); 1..n are the turn's tool calls in order
(the provider's ``call_id``, the tool, redacted arguments, the exact tool-result text the model got,
whether it was an error, the side effect's idempotency key). ``message`` replaces ``reply`` and
``output``: replaying ``message`` in order rebuilds the conversation byte for byte.

Rows written by the former protocol (one row per iteration, a JSON reply naming one tool) become a
turn row with one tool call (id ``legacy-<iteration>``) and that call's row, so a run stopped mid-loop
at the upgrade resumes without repeating its calls.

Revision ID: 0004
Revises: 0003
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ["run_id", "item_index", "step_index", "iteration"]
_CAP = 16_000  # runner.providers.base.TOOL_RESULT_MAX_CHARS (migrations do not import the runner)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _legacy_rows(conn: sa.Connection) -> list[Any]:
    return list(conn.execute(sa.text(
        "SELECT run_id, item_index, step_index, iteration, tenant_id, tool, args, reply, output, fence, created_at "
        "FROM loop_calls ORDER BY run_id, item_index, step_index, iteration")).mappings())


def _load(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def upgrade() -> None:
    conn = op.get_bind()
    legacy = _legacy_rows(conn)
    op.execute("DELETE FROM loop_calls")
    with op.batch_alter_table("loop_calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("call_index", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("call_id", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("model", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("message", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("is_error", sa.Boolean(), server_default=sa.text("false"), nullable=False))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("cost_usd", sa.Numeric(precision=18, scale=8), server_default=sa.text("0"),
                                      nullable=False))
        batch_op.add_column(sa.Column("llm_calls", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.alter_column("tool", existing_type=sa.String(length=120), nullable=True)
        batch_op.drop_column("reply")
        batch_op.drop_column("output")
        batch_op.drop_constraint("pk_loop_calls", type_="primary")
        batch_op.create_primary_key("pk_loop_calls", [*_KEY, "call_index"])
    table = sa.table("loop_calls", *(sa.column(name) for name in (
        *_KEY, "call_index", "tenant_id", "call_id", "tool", "model", "message", "is_error", "fence", "created_at")),
        sa.column("args", _JSON))
    for row in legacy:
        call_id = f"legacy-{row['iteration']}"
        args = _load(row["args"])
        key = {k: row[k] for k in _KEY}
        turn = {"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "name": row["tool"], "arguments": args if isinstance(args, dict) else {}}]}
        result = json.dumps(_load(row["output"]), default=str, ensure_ascii=False)
        if len(result) > _CAP:
            result = result[:_CAP] + "\n[truncated by Midwatch]"
        common = {"tenant_id": row["tenant_id"], "fence": row["fence"], "created_at": row["created_at"]}
        for values in ({"call_index": 0, "call_id": None, "tool": None, "args": sa.null(), "message": json.dumps(turn)},
                       {"call_index": 1, "call_id": call_id, "tool": row["tool"], "args": args, "message": result}):
            conn.execute(sa.insert(table).values(**key, **common, **values, model=None, is_error=False))


def downgrade() -> None:
    op.execute("DELETE FROM loop_calls")
    with op.batch_alter_table("loop_calls", schema=None) as batch_op:
        batch_op.drop_constraint("pk_loop_calls", type_="primary")
        batch_op.create_primary_key("pk_loop_calls", _KEY)
        batch_op.add_column(sa.Column("reply", sa.Text(), server_default=sa.text("''"), nullable=False))
        batch_op.add_column(sa.Column("output", _JSON, nullable=True))
        batch_op.alter_column("tool", existing_type=sa.String(length=120), nullable=False)
        for name in ("llm_calls", "cost_usd", "idempotency_key", "is_error", "message", "model", "call_id",
                     "call_index"):
            batch_op.drop_column(name)
