"""Tables: tenants, api_keys, api_key_windows (per-key rate-limit counters)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import UtcDateTime

__all__ = ["ApiKey", "ApiKeyWindow", "Tenant"]


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKey(Base):
    """An API key. Only the SHA-256 of the key is stored; the key itself is shown once."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)  # None: operator
    role: Mapped[str] = mapped_column(String(16))  # operator | tenant-admin | approver | viewer
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(24))  # shown in listings to recognise a key
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Set when the key is rotated: it keeps working until then (the grace period), then is refused.
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Requests per minute for this key; None: MIDWATCH_RATE_LIMIT_PER_MINUTE.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer(), nullable=True)


class ApiKeyWindow(Base):
    """Requests counted for one key in one fixed one-minute window (shared by every API replica).

    ``window_start`` is the window's start in epoch seconds (a multiple of 60). Rows of past
    windows are deleted by the first request of the key's next window.
    """

    __tablename__ = "api_key_windows"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger(), primary_key=True)
    count: Mapped[int] = mapped_column(Integer(), default=0)
