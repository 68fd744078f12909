"""Tables: secrets, secret_versions, master_keys.

A secret is a tenant-owned name with a rotation policy; its values are versions. At most one
version per secret is ``pending``, ``current`` or ``previous`` at a time (partial unique index);
``retired`` versions keep their metadata but their ciphertext, nonce and wrapped key are wiped.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import UtcDateTime

__all__ = ["MasterKeyRecord", "Secret", "SecretVersion"]

_LIVE = text("deleted_at IS NULL")
_STAGED = text("state IN ('pending', 'current', 'previous')")


class Secret(Base):
    """A named credential of one tenant. Soft-deleted: the name can be reused after deletion."""

    __tablename__ = "secrets"
    __table_args__ = (
        Index("uq_secrets_tenant_name_live", "tenant_id", "name", unique=True,
              sqlite_where=_LIVE, postgresql_where=_LIVE),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    max_age_days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # rotation policy; None: no policy
    grace_seconds: Mapped[int] = mapped_column(Integer)  # how long ``previous`` keeps working after a promote
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)  # last promote
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)  # throttled
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class SecretVersion(Base):
    """One encrypted value of a secret (see ``tenants.secrets.crypto`` for the envelope)."""

    __tablename__ = "secret_versions"
    __table_args__ = (
        UniqueConstraint("secret_id", "version", name="uq_secret_versions_secret_version"),
        Index("uq_secret_versions_secret_state", "secret_id", "state", unique=True,
              sqlite_where=_STAGED, postgresql_where=_STAGED),
        Index("ix_secret_versions_master_key", "master_key_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    secret_id: Mapped[str] = mapped_column(ForeignKey("secrets.id"))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # pending | current | previous | retired
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # None once retired
    nonce: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # wrap nonce + wrapped data key
    master_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    promoted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)  # became current
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)  # end of grace (previous)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class MasterKeyRecord(Base):
    """Bookkeeping of the master keys that have wrapped data keys (ids only, never key material)."""

    __tablename__ = "master_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    first_used_at: Mapped[datetime] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
