"""All SQL for the sandbox tools' per-tenant records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from tenants.kit.ids import utcnow
from tenants.kit.repository import TenantRepository
from tenants.sandbox.models import SandboxRecord

__all__ = ["SandboxRepository"]


class SandboxRepository(TenantRepository):
    """A tenant's ``sandbox.record`` list."""

    def add(self, key: str, args: Any) -> bool:
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        res = self.session.execute(
            insert(SandboxRecord)
            .values(tenant_id=self.tenant_id, idempotency_key=key, args=args, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
            .returning(SandboxRecord.id)  # not rowcount: an ORM-enabled INSERT reports -1 on PostgreSQL
        )
        return res.first() is not None

    def list(self, *, after: int | None, limit: int) -> Sequence[SandboxRecord]:
        q = (select(SandboxRecord).where(SandboxRecord.tenant_id == self.tenant_id)
             .order_by(SandboxRecord.id).limit(limit))
        if after is not None:
            q = q.where(SandboxRecord.id > after)
        return self.session.scalars(q).all()
