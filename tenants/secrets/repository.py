"""All SQL of the secrets vault: :class:`SecretRepository` (one tenant) and the operator's
:class:`SecretsPlatformRepository` (master-key rotation, the scheduler's sweeps)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import defer

from tenants.kit.db import insert_ignore
from tenants.kit.repository import PlatformRepository, TenantRepository
from tenants.secrets.models import MasterKeyRecord, Secret, SecretVersion

__all__ = ["STAGED_STATES", "SecretRepository", "SecretsPlatformRepository"]

STAGED_STATES = ("pending", "current", "previous")
_BLOBS = (defer(SecretVersion.ciphertext), defer(SecretVersion.nonce), defer(SecretVersion.wrapped_key))
_WIPED = {"ciphertext": None, "nonce": None, "wrapped_key": None}


class SecretRepository(TenantRepository):
    """One tenant's secrets and their versions."""

    def add_secret(self, secret: Secret) -> Secret:
        secret.tenant_id = self.tenant_id
        self.session.add(secret)
        self.session.flush()
        return secret

    def add_version(self, version: SecretVersion) -> SecretVersion:
        version.tenant_id = self.tenant_id
        self.session.add(version)
        self.session.flush()
        return version

    def get_live(self, name: str, *, lock: bool = False) -> Secret | None:
        """The undeleted secret called ``name``; ``lock`` takes a row lock (PostgreSQL) for state changes."""
        q = select(Secret).where(Secret.tenant_id == self.tenant_id, Secret.name == name,
                                 Secret.deleted_at.is_(None))
        if lock:
            q = q.with_for_update()
        return self.session.scalar(q)

    def list_live(self, *, after: str | None, limit: int) -> Sequence[Secret]:
        """Undeleted secrets ordered by name (the cursor is the last name)."""
        q = (select(Secret).where(Secret.tenant_id == self.tenant_id, Secret.deleted_at.is_(None))
             .order_by(Secret.name).limit(limit))
        if after:
            q = q.where(Secret.name > after)
        return self.session.scalars(q).all()

    def staged_versions(self, secret_ids: Iterable[str]) -> Sequence[SecretVersion]:
        """Pending/current/previous versions of these secrets, without loading their ciphertexts."""
        ids = list(secret_ids)
        if not ids:
            return []
        q = (select(SecretVersion).options(*_BLOBS)
             .where(SecretVersion.tenant_id == self.tenant_id, SecretVersion.secret_id.in_(ids),
                    SecretVersion.state.in_(STAGED_STATES)))
        return self.session.scalars(q).all()

    def staged_version(self, secret_id: str, state: str) -> SecretVersion | None:
        """The version of ``secret_id`` in ``state`` (one of :data:`STAGED_STATES`), ciphertext included."""
        return self.session.scalar(select(SecretVersion).where(
            SecretVersion.tenant_id == self.tenant_id, SecretVersion.secret_id == secret_id,
            SecretVersion.state == state))

    def next_version_number(self, secret_id: str) -> int:
        latest = self.session.scalar(select(func.max(SecretVersion.version)).where(
            SecretVersion.tenant_id == self.tenant_id, SecretVersion.secret_id == secret_id))
        return int(latest or 0) + 1

    def retire(self, version_id: str, now: datetime) -> None:
        """Retire a version and wipe its ciphertext and wrapped key."""
        self.session.execute(update(SecretVersion)
                             .where(SecretVersion.tenant_id == self.tenant_id, SecretVersion.id == version_id)
                             .values(state="retired", retired_at=now, expires_at=None, **_WIPED))

    def demote_to_previous(self, version_id: str, expires_at: datetime) -> None:
        self.session.execute(update(SecretVersion)
                             .where(SecretVersion.tenant_id == self.tenant_id, SecretVersion.id == version_id)
                             .values(state="previous", expires_at=expires_at))

    def promote_to_current(self, version_id: str, now: datetime) -> None:
        self.session.execute(update(SecretVersion)
                             .where(SecretVersion.tenant_id == self.tenant_id, SecretVersion.id == version_id)
                             .values(state="current", promoted_at=now, expires_at=None))

    def mark_rotated(self, secret_id: str, now: datetime) -> None:
        self.session.execute(update(Secret).where(Secret.tenant_id == self.tenant_id, Secret.id == secret_id)
                             .values(last_rotated_at=now))

    def touch_used(self, secret_id: str, now: datetime, every: timedelta) -> None:
        """Record a use, at most once per ``every`` (one conditional UPDATE: no read-then-write)."""
        self.session.execute(update(Secret)
                             .where(Secret.tenant_id == self.tenant_id, Secret.id == secret_id,
                                    or_(Secret.last_used_at.is_(None), Secret.last_used_at < now - every))
                             .values(last_used_at=now))

    def soft_delete(self, secret_id: str, now: datetime) -> None:
        """Mark the secret deleted and retire (wipe) every version it has."""
        self.session.execute(update(SecretVersion)
                             .where(SecretVersion.tenant_id == self.tenant_id, SecretVersion.secret_id == secret_id,
                                    SecretVersion.state != "retired")
                             .values(state="retired", retired_at=now, expires_at=None, **_WIPED))
        self.session.execute(update(Secret).where(Secret.tenant_id == self.tenant_id, Secret.id == secret_id)
                             .values(deleted_at=now))


class SecretsPlatformRepository(PlatformRepository):
    """Operator-level, on purpose across tenants: master-key bookkeeping and rotation, scheduler sweeps."""

    def record_master_key(self, key_id: str, now: datetime) -> None:
        """Remember that ``key_id`` wraps data keys (idempotent, safe under concurrent first use)."""
        self.session.execute(insert_ignore(self.session, MasterKeyRecord, "key_id")
                             .values(key_id=key_id, first_used_at=now))

    def retire_master_key(self, key_id: str, now: datetime) -> None:
        self.session.execute(update(MasterKeyRecord)
                             .where(MasterKeyRecord.key_id == key_id, MasterKeyRecord.retired_at.is_(None))
                             .values(retired_at=now))

    def versions_wrapped_by(self, key_id: str, *, after: str, limit: int) -> Sequence[tuple[SecretVersion, str]]:
        """A batch of (version, secret name) whose data key ``key_id`` wraps, by id after ``after``."""
        q = (select(SecretVersion, Secret.name).join(Secret, Secret.id == SecretVersion.secret_id)
             .where(SecretVersion.master_key_id == key_id, SecretVersion.wrapped_key.is_not(None),
                    SecretVersion.id > after)
             .order_by(SecretVersion.id).limit(limit))
        return [(v, name) for v, name in self.session.execute(q).all()]

    def set_wrapped_key(self, version_id: str, wrapped_key: bytes, new_key_id: str, old_key_id: str) -> bool:
        """Swap a version's wrapped key, only if ``old_key_id`` still wraps it."""
        res = self.session.execute(update(SecretVersion)
                                   .where(SecretVersion.id == version_id, SecretVersion.master_key_id == old_key_id)
                                   .values(wrapped_key=wrapped_key, master_key_id=new_key_id))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def count_by_master_key(self) -> dict[str, int]:
        """How many readable versions each master key wraps."""
        q = (select(SecretVersion.master_key_id, func.count()).where(SecretVersion.wrapped_key.is_not(None))
             .group_by(SecretVersion.master_key_id))
        return {str(key_id): int(n) for key_id, n in self.session.execute(q).all()}

    def secrets_with_policy(self) -> Sequence[Secret]:
        """Every undeleted secret that has a rotation policy."""
        return self.session.scalars(select(Secret).where(Secret.deleted_at.is_(None),
                                                         Secret.max_age_days.is_not(None))
                                    .order_by(Secret.tenant_id, Secret.name)).all()

    def live_secrets(self) -> Sequence[Secret]:
        """Every undeleted secret of every tenant (metadata rows: names, policy, dates; never values)."""
        return self.session.scalars(select(Secret).where(Secret.deleted_at.is_(None))
                                    .order_by(Secret.tenant_id, Secret.name)).all()

    def staged_versions_of_live(self) -> Sequence[SecretVersion]:
        """Pending/current/previous versions of undeleted secrets, with their ciphertext, nonce and wrapped
        key deferred (never loaded): for metadata only."""
        q = (select(SecretVersion).options(*_BLOBS)
             .join(Secret, Secret.id == SecretVersion.secret_id)
             .where(Secret.deleted_at.is_(None), SecretVersion.state.in_(STAGED_STATES)))
        return self.session.scalars(q).all()

    def expired_previous(self, now: datetime, limit: int) -> Sequence[tuple[str, str]]:
        """(tenant_id, version id) of ``previous`` versions whose grace period has ended."""
        q = (select(SecretVersion.tenant_id, SecretVersion.id)
             .where(SecretVersion.state == "previous", SecretVersion.expires_at <= now).limit(limit))
        return [(t, i) for t, i in self.session.execute(q).all()]
