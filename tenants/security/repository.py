"""All SQL for scope violations."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from tenants.kit.repository import PlatformRepository, TenantRepository
from tenants.security.models import ScopeViolation

__all__ = ["PlatformSecurityRepository", "SecurityRepository"]


class SecurityRepository(TenantRepository):
    def add(self, violation: ScopeViolation) -> None:
        violation.tenant_id = self.tenant_id
        self.session.add(violation)

    def list(self, *, before: int | None, limit: int) -> Sequence[ScopeViolation]:
        q = (select(ScopeViolation).where(ScopeViolation.tenant_id == self.tenant_id)
             .order_by(ScopeViolation.id.desc()).limit(limit))
        if before is not None:
            q = q.where(ScopeViolation.id < before)
        return self.session.scalars(q).all()


class PlatformSecurityRepository(PlatformRepository):
    def counts_by_tenant(self) -> dict[str, int]:
        rows = self.session.execute(select(ScopeViolation.tenant_id, func.count()).group_by(ScopeViolation.tenant_id))
        return {str(t): int(n) for t, n in rows.all()}
