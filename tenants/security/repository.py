"""All SQL for scope violations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

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
    def counts_since(self, since: datetime) -> dict[tuple[str, str], int]:
        """Blocked attempts per (tenant, kind) since ``since``."""
        rows = self.session.execute(
            select(ScopeViolation.tenant_id, ScopeViolation.kind, func.count())
            .where(ScopeViolation.at >= since).group_by(ScopeViolation.tenant_id, ScopeViolation.kind))
        return {(str(t), str(k)): int(n) for t, k, n in rows.all()}

    def latest(self, tenant_id: str, limit: int) -> Sequence[ScopeViolation]:
        """One tenant's newest violations (``ix_scope_violations_tenant_at``)."""
        return self.session.scalars(
            select(ScopeViolation).where(ScopeViolation.tenant_id == tenant_id)
            .order_by(ScopeViolation.at.desc(), ScopeViolation.id.desc()).limit(limit)).all()
