"""run_start_waits: the time-to-start histogram the read-model deriver folds from run.started events

Per (tenant, minute of the first start, log-spaced wait bucket) the number of runs, kept for two hours
(tenants.reliability.models.RunStartWait); the dashboard's Overview and Tenants pages read the last hour.
Starts before the upgrade are not back-filled (the deriver's cursor is past them): the figures fill in with
the runs that start after it.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tenants.kit.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('run_start_waits',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('minute', tenants.kit.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('bucket', sa.Integer(), nullable=False),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'minute', 'bucket', name=op.f('pk_run_start_waits'))
    )
    with op.batch_alter_table('run_start_waits', schema=None) as batch_op:
        batch_op.create_index('ix_run_start_waits_minute', ['minute'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('run_start_waits', schema=None) as batch_op:
        batch_op.drop_index('ix_run_start_waits_minute')
    op.drop_table('run_start_waits')
