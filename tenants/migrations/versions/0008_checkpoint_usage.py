"""a step checkpoint records the item's steps and model calls used up to it

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("step_checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("steps_used", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("llm_calls", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("step_checkpoints", schema=None) as batch_op:
        batch_op.drop_column("llm_calls")
        batch_op.drop_column("steps_used")
