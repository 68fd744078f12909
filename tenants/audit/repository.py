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

    def lock_head(self) -> tuple[int, str, str | None]:
        """The chain's (seq, hash, seal), row-locked until commit: concurrent appends to one chain queue here.

        A missing head row is created first, unsealed (INSERT ... ON CONFLICT DO NOTHING, so two first
        appends cannot both create it): a chain's sealed genesis is created when the chain is opened
        (:meth:`open`), so a head that has to be created here was deleted (or predates sealing), and the
        append after it carries the broken marker (tenants.audit.seals). ``FOR UPDATE`` then waits for any
        other appender and, under READ COMMITTED, reads the row as that appender committed it. SQLite
        serialises writers anyway.
        """
        self._insert_head(None)
        row = self.session.execute(select(AuditHead.seq, AuditHead.hash, AuditHead.seal)
                                   .where(AuditHead.tenant_key == self.chain_key).with_for_update()).one()
        return int(row.seq), str(row.hash), row.seal

    def open(self, seal: str) -> bool:
        """Create the chain's sealed genesis head (seq 0) unless the chain has a head; True if created."""
        return self._insert_head(seal)

    def _insert_head(self, seal: str | None) -> bool:
        res = self.session.execute(insert_ignore(self.session, AuditHead, "tenant_key")
                                   .values(tenant_key=self.chain_key, seq=0, hash=GENESIS, seal=seal))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def append(self, event: AuditEvent, seal: str) -> None:
        """Insert ``event`` and move the head (and its seal) to it (the caller holds the head lock)."""
        self.session.add(event)
        self.session.execute(update(AuditHead).where(AuditHead.tenant_key == self.chain_key)
                             .values(seq=event.seq, hash=event.hash, seal=seal))
        self.session.flush()

    def head(self) -> tuple[int, str, str | None] | None:
        row = self.session.execute(select(AuditHead.seq, AuditHead.hash, AuditHead.seal)
                                   .where(AuditHead.tenant_key == self.chain_key)).one_or_none()
        return (int(row.seq), str(row.hash), row.seal) if row is not None else None

    def reseal(self, *, seq: int, seal: str | None, new_seal: str) -> bool:
        """Replace the head's seal, only if the head is still (seq, seal): an append meanwhile keeps its own."""
        same = AuditHead.seal.is_(None) if seal is None else AuditHead.seal == seal
        res = self.session.execute(update(AuditHead).where(AuditHead.tenant_key == self.chain_key,
                                                           AuditHead.seq == seq, same).values(seal=new_seal))
        return bool(res.rowcount)  # type: ignore[attr-defined]

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

    def chain_keys(self) -> list[str]:
        """Every chain that has at least one event (or a head)."""
        keys = set(self.session.scalars(select(AuditHead.tenant_key)).all())
        keys |= set(self.session.scalars(select(AuditEvent.tenant_key).distinct()).all())
        return sorted(keys)
