"""Repository bases. Every tenant repository is built with a tenant id and scopes every query by it;
the only unscoped path is the operator's explicit :class:`PlatformRepository`."""

from __future__ import annotations

from sqlalchemy.orm import Session

__all__ = ["PlatformRepository", "TenantRepository"]


class TenantRepository:
    """Base of all tenant-scoped repositories: no tenant id, no repository."""

    def __init__(self, session: Session, tenant_id: str) -> None:
        if not tenant_id:
            raise ValueError("a tenant repository needs a tenant_id")
        self.session = session
        self.tenant_id = tenant_id

    @property
    def dialect(self) -> str:
        bind = self.session.get_bind()
        return bind.dialect.name


class PlatformRepository:
    """Base of operator-only repositories that read or write across tenants, on purpose."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name
