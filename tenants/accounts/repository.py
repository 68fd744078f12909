"""All SQL for tenants and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from tenants.accounts.models import ApiKey, Tenant
from tenants.kit.ids import utcnow
from tenants.kit.repository import PlatformRepository, TenantRepository

__all__ = ["AccountsPlatformRepository", "ApiKeyRepository"]


class AccountsPlatformRepository(PlatformRepository):
    """Operator-level access: tenants across the platform, and key lookup for authentication."""

    def add_tenant(self, tenant: Tenant) -> Tenant:
        self.session.add(tenant)
        self.session.flush()
        return tenant

    def tenant_by_name(self, name: str) -> Tenant | None:
        return self.session.scalar(select(Tenant).where(Tenant.name == name))

    def tenant(self, tenant_id: str) -> Tenant | None:
        return self.session.get(Tenant, tenant_id)

    def list_tenants(self, *, after: str | None, limit: int) -> Sequence[Tenant]:
        q = select(Tenant).order_by(Tenant.id).limit(limit)
        if after:
            q = q.where(Tenant.id > after)
        return self.session.scalars(q).all()

    def add_key(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        self.session.flush()
        return key

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        return self.session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))

    def has_operator_key(self) -> bool:
        q = select(ApiKey.id).where(ApiKey.role == "operator", ApiKey.revoked_at.is_(None)).limit(1)
        return self.session.scalar(q) is not None

    def touch_key(self, key_id: str, when: datetime) -> None:
        self.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))


class ApiKeyRepository(TenantRepository):
    """A tenant's own API keys."""

    def add(self, key: ApiKey) -> ApiKey:
        key.tenant_id = self.tenant_id
        self.session.add(key)
        self.session.flush()
        return key

    def list(self, *, after: str | None, limit: int) -> Sequence[ApiKey]:
        q = select(ApiKey).where(ApiKey.tenant_id == self.tenant_id).order_by(ApiKey.id).limit(limit)
        if after:
            q = q.where(ApiKey.id > after)
        return self.session.scalars(q).all()

    def get(self, key_id: str) -> ApiKey | None:
        return self.session.scalar(select(ApiKey).where(ApiKey.tenant_id == self.tenant_id, ApiKey.id == key_id))

    def revoke(self, key_id: str) -> bool:
        res = self.session.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == self.tenant_id, ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]
