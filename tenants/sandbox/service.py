"""Rules for the sandbox records. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from tenants.sandbox.models import SandboxRecord
from tenants.sandbox.repository import SandboxRepository

__all__ = ["list_records", "record_effect"]


def record_effect(session: Session, tenant_id: str, idempotency_key: str, args: Any) -> bool:
    """Append once per idempotency key; True if this call added the entry."""
    return SandboxRepository(session, tenant_id).add(idempotency_key, args)


def list_records(session: Session, tenant_id: str, *, after: int | None, limit: int) -> Sequence[SandboxRecord]:
    """The tenant's records, oldest first."""
    return SandboxRepository(session, tenant_id).list(after=after, limit=limit)
