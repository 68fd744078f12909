"""Sealed chain heads (runs.event_seal, audit_heads.seal) and what an approval binds (approvals.binding)

A chain head's seal is an HMAC under a key derived from the secrets master key (tenants.audit.seals), which
the database does not hold: rows written before this revision have none, and verify reports them as not
sealed. An approval's ``binding`` is the exact request it covers (for an HTTP tool: the definition's hash,
method, URL, headers other than credentials and the body's hash), shown to the approver.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_seal', sa.String(length=96), nullable=True))
    with op.batch_alter_table('audit_heads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seal', sa.String(length=96), nullable=True))
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('binding', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.drop_column('binding')
    with op.batch_alter_table('audit_heads', schema=None) as batch_op:
        batch_op.drop_column('seal')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('event_seal')
