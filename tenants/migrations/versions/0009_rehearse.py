"""rehearsals (one report per rehearsal of an agent version) and rehearsal_policies (the deploy gate)

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenants.kit.types import JsonType, UtcDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rehearsals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("agent_name", sa.String(length=64), nullable=False),
        sa.Column("agent_version", sa.Integer(), nullable=True),
        sa.Column("agent_version_id", sa.String(length=40), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("profile_rank", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("options", JsonType, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=True),
        sa.Column("measured", sa.Float(), nullable=True),
        sa.Column("projected", sa.Float(), nullable=True),
        sa.Column("slo", sa.Float(), nullable=True),
        sa.Column("pass_k", sa.Float(), nullable=True),
        sa.Column("duplicates", sa.Integer(), nullable=True),
        sa.Column("recovery_s", sa.Float(), nullable=True),
        sa.Column("report", JsonType, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_rehearsals_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rehearsals")),
    )
    with op.batch_alter_table("rehearsals", schema=None) as batch_op:
        batch_op.create_index("ix_rehearsals_tenant_agent", ["tenant_id", "agent_name", "id"], unique=False)
        batch_op.create_index("ix_rehearsals_gate", ["tenant_id", "agent_version_id", "verdict"], unique=False)
        batch_op.create_index("ix_rehearsals_state", ["state", "updated_at"], unique=False)
    op.create_table(
        "rehearsal_policies",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("agent_name", sa.String(length=64), nullable=False),
        sa.Column("requires_rehearsal", sa.Boolean(), nullable=False),
        sa.Column("min_profile", sa.String(length=16), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_rehearsal_policies_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "agent_name", name=op.f("pk_rehearsal_policies")),
    )


def downgrade() -> None:
    op.drop_table("rehearsal_policies")
    with op.batch_alter_table("rehearsals", schema=None) as batch_op:
        batch_op.drop_index("ix_rehearsals_state")
        batch_op.drop_index("ix_rehearsals_gate")
        batch_op.drop_index("ix_rehearsals_tenant_agent")
    op.drop_table("rehearsals")
