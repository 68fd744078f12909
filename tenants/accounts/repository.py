"""All SQL for tenants and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update

from tenants.accounts.models import ApiKey, ApiKeyWindow, Tenant
from tenants.kit.db import upsert
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

    def has_operator_key(self, now: datetime) -> bool:
        """Whether an operator key that still works (not revoked, not past its rotation grace) exists."""
        q = (select(ApiKey.id)
             .where(ApiKey.role == "operator", ApiKey.revoked_at.is_(None),
                    (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now))
             .limit(1))
        return self.session.scalar(q) is not None

    def operator_key(self, key_id: str) -> ApiKey | None:
        """An operator key by id, locked until commit (PostgreSQL) so two rotations cannot both win."""
        return self.session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id.is_(None), ApiKey.role == "operator")
            .with_for_update())

    def set_key_expiry(self, key_id: str, expires_at: datetime) -> None:
        self.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(expires_at=expires_at))

    def touch_key(self, key_id: str, when: datetime) -> None:
        self.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))

    def add_requests(self, key_id: str, window_start: int, count: int) -> int:
        """Add ``count`` requests of ``key_id`` to the window starting at ``window_start``; the new total.

        One atomic upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), so every API replica's
        batch lands; a key's first batch of a window forgets its earlier windows.
        """
        stmt = upsert(self.session, ApiKeyWindow).values(key_id=key_id, window_start=window_start, count=count)
        stmt = stmt.on_conflict_do_update(index_elements=["key_id", "window_start"],
                                          set_={"count": ApiKeyWindow.count + count})
        total = self.session.scalar(stmt.returning(ApiKeyWindow.count))
        assert total is not None
        if total == count:
            self.session.execute(delete(ApiKeyWindow).where(ApiKeyWindow.key_id == key_id,
                                                            ApiKeyWindow.window_start < window_start))
        return int(total)


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

    def get(self, key_id: str, *, lock: bool = False) -> ApiKey | None:
        q = select(ApiKey).where(ApiKey.tenant_id == self.tenant_id, ApiKey.id == key_id)
        return self.session.scalar(q.with_for_update() if lock else q)

    def set_expiry(self, key_id: str, expires_at: datetime) -> None:
        self.session.execute(update(ApiKey).where(ApiKey.tenant_id == self.tenant_id, ApiKey.id == key_id)
                             .values(expires_at=expires_at))

    def revoke(self, key_id: str) -> bool:
        res = self.session.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == self.tenant_id, ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]
