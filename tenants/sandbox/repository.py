"""All SQL for the sandbox tools' per-tenant records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tenants.kit.db import insert_ignore
from tenants.kit.ids import utcnow
from tenants.kit.repository import TenantRepository
from tenants.sandbox.models import SandboxRecord

__all__ = ["SandboxRepository"]

_SEQ_ATTEMPTS = 20


class SandboxRepository(TenantRepository):
    """A tenant's ``sandbox.record`` list."""

    def add(self, key: str, args: Any) -> bool:
        """Insert once per key with the tenant's next ``seq``; True if this call added the record.

        Two concurrent inserts of one tenant may pick the same ``seq`` (PostgreSQL); the loser's
        savepoint rolls back on the unique constraint and it takes the next number.
        """
        next_seq = (select(func.coalesce(func.max(SandboxRecord.seq), 0) + 1)
                    .where(SandboxRecord.tenant_id == self.tenant_id).scalar_subquery())
        statement = (
            insert_ignore(self.session, SandboxRecord, "tenant_id", "idempotency_key")
            .values(tenant_id=self.tenant_id, seq=next_seq, idempotency_key=key, args=args, created_at=utcnow())
            .returning(SandboxRecord.id)  # not rowcount: an ORM-enabled INSERT reports -1 on PostgreSQL
        )
        for attempt in range(_SEQ_ATTEMPTS):
            try:
                with self.session.begin_nested():
                    return self.session.execute(statement).first() is not None
            except IntegrityError:
                if attempt == _SEQ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def list(self, *, after: int | None, limit: int) -> Sequence[SandboxRecord]:
        q = (select(SandboxRecord).where(SandboxRecord.tenant_id == self.tenant_id)
             .order_by(SandboxRecord.seq).limit(limit))
        if after is not None:
            q = q.where(SandboxRecord.seq > after)
        return self.session.scalars(q).all()
