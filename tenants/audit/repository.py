"""All SQL of the audit trail. A tenant's chain through :class:`AuditRepository`; the platform chain and
cross-tenant reads (operator, CLI) through :class:`PlatformAuditRepository`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tenants.audit.models import PLATFORM_CHAIN, AuditEvent, AuditHead
from tenants.kit.db import insert_ignore
from tenants.kit.repository import PlatformRepository, TenantRepository, keyset_pages

__all__ = ["AuditRepository", "PlatformAuditRepository"]

GENESIS = "0" * 64


class _Chain:
    """Queries on one chain (``chain_key``: a tenant id or "platform")."""

    session: Session
    chain_key: str

    def lock_head(self) -> tuple[int, str]:
        """The chain's (seq, hash), row-locked until commit: concurrent appends to one chain queue here.

        The head row is created first if missing (INSERT ... ON CONFLICT DO NOTHING, so two first
        appends cannot both create it); ``FOR UPDATE`` then waits for any other appender and, under
        READ COMMITTED, reads the row as that appender committed it. SQLite serialises writers anyway.
        """
        self.session.execute(insert_ignore(self.session, AuditHead, "tenant_key")
                             .values(tenant_key=self.chain_key, seq=0, hash=GENESIS))
        row = self.session.execute(select(AuditHead.seq, AuditHead.hash)
                                   .where(AuditHead.tenant_key == self.chain_key).with_for_update()).one()
        return int(row.seq), str(row.hash)

    def append(self, event: AuditEvent) -> None:
        """Insert ``event`` and move the head to it (the caller holds the head lock)."""
        self.session.add(event)
        self.session.execute(update(AuditHead).where(AuditHead.tenant_key == self.chain_key)
                             .values(seq=event.seq, hash=event.hash))
        self.session.flush()

    def head(self) -> tuple[int, str] | None:
        row = self.session.execute(select(AuditHead.seq, AuditHead.hash)
                                   .where(AuditHead.tenant_key == self.chain_key)).one_or_none()
        return (int(row.seq), str(row.hash)) if row is not None else None

    def page(self, *, after: int | None, limit: int, action: str | None = None) -> Sequence[AuditEvent]:
        """Events in chain order (oldest first), after seq ``after``, optionally of one action."""
        q = select(AuditEvent).where(AuditEvent.tenant_key == self.chain_key).order_by(AuditEvent.seq).limit(limit)
        if after is not None:
            q = q.where(AuditEvent.seq > after)
        if action is not None:
            q = q.where(AuditEvent.action == action)
        return self.session.scalars(q).all()

    def all_events(self, batch: int = 1000) -> Iterator[AuditEvent]:
        """Every event of the chain in seq order, read in batches (bounded memory for long chains)."""
        return keyset_pages(lambda after, limit: self.page(after=after, limit=limit), lambda e: e.seq, batch)


class AuditRepository(TenantRepository, _Chain):
    """A tenant's own audit chain."""

    def __init__(self, session: Session, tenant_id: str) -> None:
        super().__init__(session, tenant_id)
        self.chain_key = tenant_id


class PlatformAuditRepository(PlatformRepository, _Chain):
    """The platform chain (``chain_key="platform"``) or, for operators on purpose, any tenant's chain."""

    def __init__(self, session: Session, chain_key: str = PLATFORM_CHAIN) -> None:
        super().__init__(session)
        self.chain_key = chain_key
