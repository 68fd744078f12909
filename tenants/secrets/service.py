"""Rules of the secrets vault. Never commits (except :func:`rotate_master_key`, see there).

Lifecycle of a secret's values::

    create ──> v1 current
    rotate ──> vN pending            (a second rotate replaces the pending one)
    promote ─> vN current, v(N-1) previous until now + grace_seconds, older previous retired
    delete ──> every version retired (ciphertext wiped), the name free again

:func:`resolve` is the only function that decrypts; it registers the plaintext for log redaction
and records the use (throttled). Nothing else here ever returns or logs a value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tenants.audit.service import record
from tenants.kit.db import unit_of_work
from tenants.kit.errors import Conflict, InvalidInput
from tenants.kit.ids import new_id, utcnow
from tenants.kit.logging import get_logger, register_secret
from tenants.kit.master_key import MasterKey, get_master_key
from tenants.secrets.crypto import Sealed, associated_data, open_value, rewrap, seal_value
from tenants.secrets.errors import SecretNotFound
from tenants.secrets.models import Secret, SecretVersion
from tenants.secrets.names import NAME_PATTERN, NAME_RULE
from tenants.secrets.repository import SecretRepository, SecretsPlatformRepository

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "MAX_AGE_DAYS_LIMIT",
    "MAX_GRACE_SECONDS",
    "MAX_VALUE_CHARS",
    "NAME_PATTERN",
    "NAME_RULE",
    "MasterKeyRotation",
    "RotationDue",
    "SecretMetadata",
    "Which",
    "create_or_rotate",
    "create_secret",
    "delete_secret",
    "due_for_rotation",
    "list_secrets",
    "metadata_by_tenant",
    "promote_secret",
    "resolve",
    "retire_expired",
    "rotate_master_key",
    "rotate_secret",
    "secret_metadata",
]

Which = Literal["current", "pending", "previous"]

DEFAULT_GRACE_SECONDS = 3600
MAX_GRACE_SECONDS = 30 * 86400
MAX_AGE_DAYS_LIMIT = 3650
MAX_VALUE_CHARS = 16384
TOUCH_EVERY = timedelta(seconds=60)
log = get_logger("secrets")


@dataclass(frozen=True, slots=True)
class SecretMetadata:
    """Everything about a secret except its value (there is deliberately no field for one)."""

    name: str
    current_version: int | None
    pending_version: int | None
    previous_version: int | None
    previous_expires_at: datetime | None
    max_age_days: int | None
    grace_seconds: int
    created_at: datetime
    last_rotated_at: datetime | None
    last_used_at: datetime | None
    age_days: int
    rotation_due: bool


@dataclass(frozen=True, slots=True)
class RotationDue:
    """A secret older than its policy allows (for the scheduler's ``secret.rotation_due`` event)."""

    tenant_id: str
    name: str
    age_days: int
    max_age_days: int


@dataclass(frozen=True, slots=True)
class MasterKeyRotation:
    """Outcome of :func:`rotate_master_key`: re-wrapped versions and what each key wraps afterwards."""

    old_key_id: str
    new_key_id: str
    rewrapped: int
    wrapped_by: dict[str, int]

    @property
    def complete(self) -> bool:
        """True when every readable version is wrapped by the new key."""
        return all(key_id == self.new_key_id for key_id in self.wrapped_by)


# ---- validation -------------------------------------------------------------------------------

def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InvalidInput(f"secret name {name!r} must be {NAME_RULE} (the names specs can reference)",
                           field="name")


def _check_value(value: str) -> None:
    if not value:
        raise InvalidInput("secret value must not be empty", field="value")
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidInput(f"secret value must be at most {MAX_VALUE_CHARS} characters", field="value")


def _check_policy(max_age_days: int | None, grace_seconds: int) -> None:
    if max_age_days is not None and not 1 <= max_age_days <= MAX_AGE_DAYS_LIMIT:
        raise InvalidInput(f"max_age_days must be between 1 and {MAX_AGE_DAYS_LIMIT}", field="max_age_days")
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise InvalidInput(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}", field="grace_seconds")


# ---- helpers ----------------------------------------------------------------------------------

def _age_days(secret: Secret, now: datetime) -> int:
    since = secret.last_rotated_at or secret.created_at
    return max(0, (now - since).days)


def _metadata(secret: Secret, versions: Sequence[SecretVersion], now: datetime) -> SecretMetadata:
    by_state = {v.state: v for v in versions if v.secret_id == secret.id}
    previous = by_state.get("previous")
    if previous is not None and previous.expires_at is not None and previous.expires_at <= now:
        previous = None  # its grace has ended; the sweeper retires it
    age = _age_days(secret, now)
    return SecretMetadata(
        name=secret.name,
        current_version=by_state["current"].version if "current" in by_state else None,
        pending_version=by_state["pending"].version if "pending" in by_state else None,
        previous_version=previous.version if previous is not None else None,
        previous_expires_at=previous.expires_at if previous is not None else None,
        max_age_days=secret.max_age_days,
        grace_seconds=secret.grace_seconds,
        created_at=secret.created_at,
        last_rotated_at=secret.last_rotated_at,
        last_used_at=secret.last_used_at,
        age_days=age,
        rotation_due=secret.max_age_days is not None and age >= secret.max_age_days,
    )


def _live(repo: SecretRepository, name: str, *, lock: bool = False) -> Secret:
    secret = repo.get_live(name, lock=lock)
    if secret is None:
        raise SecretNotFound(f"secret {name!r} not found")
    return secret


def _seal_into(repo: SecretRepository, secret: Secret, value: str, version: int, state: str, now: datetime,
               master: MasterKey) -> SecretVersion:
    sealed = seal_value(value, master, associated_data(repo.tenant_id, secret.id, secret.name, version))
    SecretsPlatformRepository(repo.session).record_master_key(master.key_id, now)
    return repo.add_version(SecretVersion(
        id=new_id("sv"), secret_id=secret.id, version=version, state=state, ciphertext=sealed.ciphertext,
        nonce=sealed.nonce, wrapped_key=sealed.wrapped_key, master_key_id=sealed.master_key_id, created_at=now,
        promoted_at=now if state == "current" else None))


def _sealed(version: SecretVersion) -> Sealed:
    assert version.ciphertext is not None and version.nonce is not None and version.wrapped_key is not None
    assert version.master_key_id is not None
    return Sealed(ciphertext=version.ciphertext, nonce=version.nonce, wrapped_key=version.wrapped_key,
                  master_key_id=version.master_key_id)


def _describe(repo: SecretRepository, secret: Secret, now: datetime) -> SecretMetadata:
    return _metadata(secret, repo.staged_versions([secret.id]), now)


# ---- tenant operations ------------------------------------------------------------------------

def create_secret(session: Session, tenant_id: str, name: str, value: str, *, max_age_days: int | None = None,
                  grace_seconds: int | None = None, master: MasterKey | None = None,
                  now: datetime | None = None) -> SecretMetadata:
    """Store a new secret; its first value is version 1, ``current`` at once."""
    _check_name(name)
    _check_value(value)
    grace = DEFAULT_GRACE_SECONDS if grace_seconds is None else grace_seconds
    _check_policy(max_age_days, grace)
    master = master or get_master_key()
    now = now or utcnow()
    repo = SecretRepository(session, tenant_id)
    if repo.get_live(name) is not None:
        raise Conflict(f"secret {name!r} already exists; rotate it instead")
    secret = Secret(id=new_id("sec"), name=name, max_age_days=max_age_days, grace_seconds=grace, created_at=now)
    try:
        with session.begin_nested():
            repo.add_secret(secret)
    except IntegrityError as exc:
        raise Conflict(f"secret {name!r} already exists; rotate it instead") from exc
    register_secret([value])  # this process has seen it: redact it from its logs from now on
    _seal_into(repo, secret, value, 1, "current", now, master)
    log.info("secret_created", tenant_id=tenant_id, secret=name, version=1)
    return _describe(repo, secret, now)


def create_or_rotate(session: Session, tenant_id: str, name: str, value: str, *,
                     master: MasterKey | None = None, now: datetime | None = None) -> SecretMetadata:
    """Create ``name`` with ``value``, or stage ``value`` as its pending version if it exists (keyring's set)."""
    if SecretRepository(session, tenant_id).get_live(name) is None:
        return create_secret(session, tenant_id, name, value, master=master, now=now)
    return rotate_secret(session, tenant_id, name, value, master=master, now=now)


def list_secrets(session: Session, tenant_id: str, *, after: str | None = None, limit: int = 100,
                 now: datetime | None = None) -> list[SecretMetadata]:
    """A page of the tenant's secrets (metadata only), by name after ``after``."""
    now = now or utcnow()
    repo = SecretRepository(session, tenant_id)
    secrets = repo.list_live(after=after, limit=limit)
    versions = repo.staged_versions(s.id for s in secrets)
    return [_metadata(s, versions, now) for s in secrets]


def metadata_by_tenant(session: Session, *, now: datetime | None = None) -> dict[str, list[SecretMetadata]]:
    """Every tenant's secrets, metadata only (never a value: ciphertexts are not even loaded), for the
    operator's security posture."""
    now = now or utcnow()
    repo = SecretsPlatformRepository(session)
    versions: dict[str, list[SecretVersion]] = {}
    for version in repo.staged_versions_of_live():
        versions.setdefault(version.secret_id, []).append(version)
    out: dict[str, list[SecretMetadata]] = {}
    for secret in repo.live_secrets():
        out.setdefault(secret.tenant_id, []).append(_metadata(secret, versions.get(secret.id, []), now))
    return out


def secret_metadata(session: Session, tenant_id: str, name: str, *, now: datetime | None = None) -> SecretMetadata:
    """One secret's metadata."""
    repo = SecretRepository(session, tenant_id)
    return _describe(repo, _live(repo, name), now or utcnow())


def rotate_secret(session: Session, tenant_id: str, name: str, value: str, *, master: MasterKey | None = None,
                  now: datetime | None = None) -> SecretMetadata:
    """Stage a new value as ``pending`` (replacing an earlier pending one); ``current`` is untouched."""
    _check_value(value)
    master = master or get_master_key()
    now = now or utcnow()
    repo = SecretRepository(session, tenant_id)
    secret = _live(repo, name, lock=True)
    stale = repo.staged_version(secret.id, "pending")
    if stale is not None:
        repo.retire(stale.id, now)
    register_secret([value])
    version = repo.next_version_number(secret.id)
    _seal_into(repo, secret, value, version, "pending", now, master)
    log.info("secret_rotated", tenant_id=tenant_id, secret=name, pending_version=version,
             replaced_pending=stale.version if stale is not None else None)
    return _describe(repo, secret, now)


def promote_secret(session: Session, tenant_id: str, name: str, *, expected_version: int | None = None,
                   now: datetime | None = None) -> SecretMetadata:
    """Make ``pending`` the ``current`` value; the old current stays usable as ``previous`` for the grace period.

    ``expected_version`` guards against promoting a pending value someone replaced meanwhile. This is
    also the hook for verification: verify the pending value first (outside any transaction, through
    ``get_secret(..., which="pending")`` and the tool that uses it), then promote with the version
    that was verified.
    """
    now = now or utcnow()
    repo = SecretRepository(session, tenant_id)
    secret = _live(repo, name, lock=True)
    pending = repo.staged_version(secret.id, "pending")
    if pending is None:
        raise Conflict(f"secret {name!r} has no pending version to promote; rotate it first")
    if expected_version is not None and pending.version != expected_version:
        raise Conflict(f"secret {name!r}: pending version is {pending.version}, not {expected_version}",
                       pending_version=pending.version)
    # Order matters: each UPDATE keeps "one version per staged state" true for the partial unique index.
    previous = repo.staged_version(secret.id, "previous")
    if previous is not None:
        repo.retire(previous.id, now)
    current = repo.staged_version(secret.id, "current")
    if current is not None:
        if secret.grace_seconds > 0:
            repo.demote_to_previous(current.id, now + timedelta(seconds=secret.grace_seconds))
        else:
            repo.retire(current.id, now)
    repo.promote_to_current(pending.id, now)
    repo.mark_rotated(secret.id, now)
    session.expire_all()
    log.info("secret_promoted", tenant_id=tenant_id, secret=name, current_version=pending.version,
             previous_version=current.version if current is not None else None, grace_seconds=secret.grace_seconds)
    return _describe(repo, _live(repo, name), now)


def resolve(session: Session, tenant_id: str, name: str, which: Which = "current", *,
            master: MasterKey | None = None, now: datetime | None = None) -> str:
    """Decrypt a secret's ``which`` version. The ONLY decrypt path of Midwatch.

    ``previous`` is available only until its grace period ends. The plaintext is registered for
    redaction before it is returned; every read is audited (``secret.read``, actor "runner"), last-used is
    touched at most once a minute per secret.
    """
    if which not in ("current", "pending", "previous"):
        raise InvalidInput("which must be current, pending or previous", field="which")
    master = master or get_master_key()
    now = now or utcnow()
    repo = SecretRepository(session, tenant_id)
    secret = _live(repo, name)
    version = repo.staged_version(secret.id, which)
    if version is None or version.ciphertext is None:
        raise SecretNotFound(f"secret {name!r} has no {which} version")
    if which == "previous" and (version.expires_at is None or version.expires_at <= now):
        raise SecretNotFound(f"secret {name!r}: the grace period of the previous version ended "
                             f"at {version.expires_at.isoformat() if version.expires_at else 'promotion'}")
    what = f"secret {name!r} version {version.version} of tenant {tenant_id}"
    plaintext = open_value(_sealed(version), master, associated_data(tenant_id, secret.id, name, version.version),
                           what)
    register_secret([plaintext])
    repo.touch_used(secret.id, now, TOUCH_EVERY)
    record(session, tenant_id, actor="runner", role="runner", action="secret.read", target=name,
           details={"version": version.version, "which": which})
    log.info("secret_resolved", tenant_id=tenant_id, secret=name, version=version.version, which=which)
    return plaintext


def delete_secret(session: Session, tenant_id: str, name: str, *, now: datetime | None = None) -> None:
    """Soft-delete: every version is retired and its ciphertext wiped; the name can be reused."""
    now = now or utcnow()
    repo = SecretRepository(session, tenant_id)
    secret = _live(repo, name, lock=True)
    repo.soft_delete(secret.id, now)
    log.info("secret_deleted", tenant_id=tenant_id, secret=name)


# ---- platform operations (scheduler, operator CLI) ---------------------------------------------

def due_for_rotation(session: Session, now: datetime | None = None) -> list[RotationDue]:
    """Secrets, across tenants, at least as old as their ``max_age_days`` (for ``secret.rotation_due``)."""
    now = now or utcnow()
    due = []
    for secret in SecretsPlatformRepository(session).secrets_with_policy():
        age = _age_days(secret, now)
        assert secret.max_age_days is not None
        if age >= secret.max_age_days:
            due.append(RotationDue(tenant_id=secret.tenant_id, name=secret.name, age_days=age,
                                   max_age_days=secret.max_age_days))
    return due


def retire_expired(session: Session, now: datetime | None = None, limit: int = 1000) -> int:
    """Retire (and wipe) ``previous`` versions whose grace ended, across tenants. Returns how many."""
    now = now or utcnow()
    expired = SecretsPlatformRepository(session).expired_previous(now, limit)
    for tenant_id, version_id in expired:
        SecretRepository(session, tenant_id).retire(version_id, now)
    return len(expired)


def rotate_master_key(old: MasterKey, new: MasterKey, *, batch_size: int = 500,
                      transaction: Callable[[], AbstractContextManager[Session]] = unit_of_work,
                      now: datetime | None = None) -> MasterKeyRotation:
    """Re-wrap every data key wrapped by ``old`` with ``new``, one transaction per batch.

    Unlike the rest of this module this commits, batch by batch, on purpose: a vault of a million
    versions must not be one transaction, and a batch is self-contained (each row is re-wrapped
    only if ``old`` still wraps it), so an interrupted rotation is resumed by running it again with
    the same keys. Values are not re-encrypted: envelope encryption only re-wraps data keys.
    """
    if old.key_id == new.key_id:
        raise InvalidInput("the new master key is the current one")
    now = now or utcnow()
    with transaction() as session:
        SecretsPlatformRepository(session).record_master_key(new.key_id, now)
    rewrapped = 0
    after = ""
    while True:
        with transaction() as session:
            repo = SecretsPlatformRepository(session)
            batch = repo.versions_wrapped_by(old.key_id, after=after, limit=batch_size)
            for version, name in batch:
                aad = associated_data(version.tenant_id, version.secret_id, name, version.version)
                what = f"secret {name!r} version {version.version} of tenant {version.tenant_id}"
                sealed = rewrap(_sealed(version), old, new, aad, what)
                repo.set_wrapped_key(version.id, sealed.wrapped_key, new.key_id, old.key_id)
        rewrapped += len(batch)
        if batch:
            log.info("master_key_rotation_batch", rewrapped=rewrapped)
        if len(batch) < batch_size:
            break
        after = batch[-1][0].id
    with transaction() as session:
        repo = SecretsPlatformRepository(session)
        wrapped_by = repo.count_by_master_key()
        if old.key_id not in wrapped_by:
            repo.retire_master_key(old.key_id, now)
    log.info("master_key_rotated", old_key_id=old.key_id, new_key_id=new.key_id, rewrapped=rewrapped,
             wrapped_by=wrapped_by)
    return MasterKeyRotation(old_key_id=old.key_id, new_key_id=new.key_id, rewrapped=rewrapped,
                             wrapped_by=wrapped_by)
