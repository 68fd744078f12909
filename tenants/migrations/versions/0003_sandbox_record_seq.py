"""sandbox_records: a per-tenant sequence number, so a tenant's record ids do not reveal other tenants' volume

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sandbox_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
    # Number existing records per tenant in the order they were made (the global id's order).
    op.execute(
        "UPDATE sandbox_records SET seq = (SELECT COUNT(*) FROM sandbox_records AS earlier "
        "WHERE earlier.tenant_id = sandbox_records.tenant_id AND earlier.id <= sandbox_records.id)"
    )
    with op.batch_alter_table('sandbox_records', schema=None) as batch_op:
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint('uq_sandbox_records_seq', ['tenant_id', 'seq'])


def downgrade() -> None:
    with op.batch_alter_table('sandbox_records', schema=None) as batch_op:
        batch_op.drop_constraint('uq_sandbox_records_seq', type_='unique')
        batch_op.drop_column('seq')
