"""Tables: audit_events (append-only, hash-chained per chain), audit_heads (one row per chain: the append lock)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import JsonType, UtcDateTime

__all__ = ["PLATFORM_CHAIN", "AuditEvent", "AuditHead"]

PLATFORM_CHAIN = "platform"
"""The chain key of operator actions that belong to no tenant (onboard, suspend, resume)."""


class AuditEvent(Base):
    """One audited action. ``hash`` covers the event's content and ``prev_hash`` (see tenants.audit.service)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("tenant_key", "seq", name="uq_audit_events_tenant_key_seq"),
        Index("ix_audit_events_tenant_action", "tenant_key", "action", "seq"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_key: Mapped[str] = mapped_column(String(40))  # the tenant id, or "platform"
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(64))  # an API key id, "system" or "runner"
    actor_role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))  # e.g. key.created, run.submitted, secret.read
    target: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JsonType)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last (seq, hash) of a chain. Appends lock this row, so a chain never forks under concurrency,
    and verification compares against it, so deleting the newest events is detected too."""

    __tablename__ = "audit_heads"

    tenant_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    seal: Mapped[str | None] = mapped_column(String(96), nullable=True)  # tenants.audit.seals
