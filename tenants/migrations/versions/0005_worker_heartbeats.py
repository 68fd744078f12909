"""worker heartbeats (issue 19: a row per live worker/scheduler process)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tenants.kit.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("health_port", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("started_at", tenants.kit.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", tenants.kit.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_heartbeats")),
    )
    op.create_index("ix_worker_heartbeats_kind_seen", "worker_heartbeats", ["kind", "last_seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_worker_heartbeats_kind_seen", table_name="worker_heartbeats")
    op.drop_table("worker_heartbeats")
