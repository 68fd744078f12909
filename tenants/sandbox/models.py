"""Table: sandbox_records, what ``sandbox.record`` did, one row per idempotency key.

``id`` is an internal row key from one sequence shared by all tenants and never leaves the database; a tenant
sees ``seq``, numbered 1, 2, ... per tenant, so its ids say nothing about other tenants' volume.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import JsonType, UtcDateTime

__all__ = ["SandboxRecord"]


class SandboxRecord(Base):
    __tablename__ = "sandbox_records"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_sandbox_records_key"),
                      UniqueConstraint("tenant_id", "seq", name="uq_sandbox_records_seq"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    seq: Mapped[int] = mapped_column(BigInteger())  # 1, 2, ... per tenant: what the API calls the record's id
    idempotency_key: Mapped[str] = mapped_column(String(120))
    args: Mapped[Any] = mapped_column(JsonType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
