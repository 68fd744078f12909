"""fair dispatch and the lean hot path

Runs get a dispatch queue (``priority``, ``runnable_at`` and a partial index), the decision log's chain
head (``event_seq``, ``event_head``) and ``suspend_requested``; decision events record a step's attempts;
new tables hold per-tenant and per-agent scheduling state and the read-model deriver's cursor.
Existing runs are put in the queue as they stand: active runs without a live lease become runnable,
their chain heads are copied from their newest event, and running counts from live leases.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tenants.kit.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUNNABLE = sa.text("runnable_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspend_requested", sa.Boolean(), server_default=sa.text("false"),
                                      nullable=False))
        batch_op.add_column(sa.Column("priority", sa.SmallInteger(), server_default=sa.text("3"), nullable=False))
        batch_op.add_column(sa.Column("runnable_at", tenants.kit.types.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("event_seq", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("event_head", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_runs_runnable", ["tenant_id", "agent_name", "priority", "runnable_at", "id"],
                              unique=False, postgresql_where=_RUNNABLE, sqlite_where=_RUNNABLE)
    with op.batch_alter_table("decision_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=True))
    op.create_table(
        "tenant_schedules",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("weight", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("vtime", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("avg_slice_s", sa.Float(), server_default=sa.text("0.05"), nullable=False),
        sa.Column("running", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=True),
        sa.Column("updated_at", tenants.kit.types.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_tenant_schedules_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_schedules")),
    )
    op.create_table(
        "agent_schedules",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("agent_name", sa.String(length=64), nullable=False),
        sa.Column("running", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_agent_schedules_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "agent_name", name=op.f("pk_agent_schedules")),
    )
    op.create_table(
        "read_model_cursors",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("gaps", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("updated_at", tenants.kit.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_read_model_cursors")),
    )
    _backfill()
    op.drop_table("budget_slots")  # concurrent runs are counted by the schedules now


def _backfill() -> None:
    """Existing data joins the new dispatch as it stands (idempotent statements, both dialects)."""
    op.execute("UPDATE runs SET runnable_at = COALESCE(wake_at, updated_at) "
               "WHERE state IN ('queued', 'running') AND lease_owner IS NULL")
    op.execute("UPDATE runs SET event_seq = COALESCE((SELECT MAX(e.seq) FROM decision_events e "
               "WHERE e.run_id = runs.id), 0)")
    op.execute("UPDATE runs SET event_head = (SELECT e.hash FROM decision_events e "
               "WHERE e.run_id = runs.id AND e.seq = runs.event_seq) WHERE event_seq > 0")
    op.execute("INSERT INTO tenant_schedules (tenant_id, running) "
               "SELECT t.id, (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = t.id AND r.lease_owner IS NOT NULL) "
               "FROM tenants t")
    op.execute("INSERT INTO agent_schedules (tenant_id, agent_name, running) "
               "SELECT a.tenant_id, a.name, (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = a.tenant_id "
               "AND r.agent_name = a.name AND r.lease_owner IS NOT NULL) FROM agents a")
    bind = op.get_bind()
    scale = 10**8 if bind.dialect.name == "sqlite" else 1  # budget amounts are scaled integers on SQLite
    caps = bind.execute(sa.text("SELECT tenant_id, \"limit\" FROM budget_limits "
                                "WHERE metric = 'concurrent_runs' AND agent = '*'")).all()
    for tenant_id, limit in caps:
        bind.execute(sa.text("UPDATE tenant_schedules SET cap = :cap WHERE tenant_id = :t"),
                     {"cap": int(limit) // scale, "t": tenant_id})


def downgrade() -> None:
    op.create_table(
        "budget_slots",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("acquired_at", tenants.kit.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tenants.kit.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_budget_slots_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "run_id", name=op.f("pk_budget_slots")),
    )
    op.create_index("ix_budget_slots_expiry", "budget_slots", ["expires_at"], unique=False)
    op.drop_table("read_model_cursors")
    op.drop_table("agent_schedules")
    op.drop_table("tenant_schedules")
    with op.batch_alter_table("decision_events", schema=None) as batch_op:
        batch_op.drop_column("attempts")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_runnable")
        for column in ("event_head", "event_seq", "runnable_at", "priority", "suspend_requested"):
            batch_op.drop_column(column)
