"""Rules for tenants and API keys: onboarding, key issue and rotation, authentication with per-key rate
limits. Never commits.

Key rotation: :func:`rotate_key` issues a new key with the same role and name and gives the old
one ``expires_at = now + grace``; until then both work, after it the old one is refused exactly
like a revoked key. Verified keys are cached per process for :data:`AUTH_CACHE_S` (revocation, expiry of a
rotation's grace and tenant suspension take effect on other processes within that bound, at once on the
process that made the change); rate limits are counted by tenants.accounts.ratelimit.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tenants.accounts.models import ApiKey, Tenant
from tenants.accounts.repository import AccountsPlatformRepository, ApiKeyRepository
from tenants.audit.service import open_chain
from tenants.kit.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    KeyAlreadyRotated,
    NotFound,
    Unauthorized,
    found,
)
from tenants.kit.ids import new_id, utcnow

__all__ = [
    "AUTH_CACHE_S",
    "DEFAULT_KEY_GRACE_SECONDS",
    "KEYS",
    "MAX_KEY_GRACE_SECONDS",
    "ROLES",
    "IssuedKey",
    "KeyCache",
    "Principal",
    "Role",
    "VerifiedKey",
    "authenticate",
    "bearer_token",
    "ensure_operator_key",
    "hash_key",
    "issue_key",
    "onboard_tenant",
    "open_platform_chain",
    "revoke_key",
    "rotate_key",
    "rotate_operator_key",
    "tenant_named",
    "verify_key",
]

Role = Literal["operator", "tenant-admin", "approver", "viewer"]
ROLES: tuple[Role, ...] = ("operator", "tenant-admin", "approver", "viewer")
TENANT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_ROLE_TAG = {"operator": "op", "tenant-admin": "adm", "approver": "apr", "viewer": "vw"}
_TOUCH_EVERY = timedelta(seconds=60)
DEFAULT_KEY_GRACE_SECONDS = 3600
MAX_KEY_GRACE_SECONDS = 7 * 86400
AUTH_CACHE_S = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: derived from the API key alone."""

    key_id: str
    role: Role
    tenant_id: str | None  # None for operators

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    plaintext: str  # shown once, never stored
    # For a rotation: the replaced key's expiry before and after it (the audit record's before/after).
    replaced_expiry: tuple[datetime | None, datetime] | None = None


def hash_key(plaintext: str) -> str:
    """SHA-256 of a key. Keys carry 256 random bits, so a fast hash is safe for lookup."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _new_key(role: Role, name: str, tenant_id: str | None, rate_limit_per_minute: int | None = None) -> IssuedKey:
    plaintext = f"mw_{_ROLE_TAG[role]}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        role=role,
        name=name,
        prefix=plaintext[:14],
        key_hash=hash_key(plaintext),
        created_at=utcnow(),
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return IssuedKey(key=key, plaintext=plaintext)


def _check_rate_limit(value: int | None) -> None:
    if value is not None and not 1 <= value <= 1_000_000:
        raise InvalidInput("rate_limit_per_minute must be between 1 and 1000000", field="rate_limit_per_minute")


def issue_key(session: Session, tenant_id: str, role: Role, name: str = "", *,
              rate_limit_per_minute: int | None = None) -> IssuedKey:
    """Create a tenant key; the plaintext is returned once. ``rate_limit_per_minute`` overrides the default."""
    if role == "operator":
        raise Forbidden("tenant keys cannot carry the operator role")
    _check_rate_limit(rate_limit_per_minute)
    issued = _new_key(role, name, tenant_id, rate_limit_per_minute)
    ApiKeyRepository(session, tenant_id).add(issued.key)
    return issued


def _usable(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def _grace(grace_seconds: int) -> timedelta:
    if not 0 <= grace_seconds <= MAX_KEY_GRACE_SECONDS:
        raise InvalidInput(f"grace_seconds must be between 0 and {MAX_KEY_GRACE_SECONDS} (7 days)",
                           field="grace_seconds")
    return timedelta(seconds=grace_seconds)


def _expiry(old: ApiKey, now: datetime, grace: timedelta) -> datetime:
    """The old key's new expiry: ``now + grace``, never later than an expiry it already has."""
    expires_at = now + grace
    return min(expires_at, old.expires_at) if old.expires_at is not None else expires_at


def _not_rotated(old: ApiKey) -> None:
    """A key in its rotation grace has a successor already: rotating it again would fork the key's lineage
    (two live successors, and an attacker holding the old key could mint fresh ones until it expires)."""
    if old.expires_at is not None:
        raise KeyAlreadyRotated(
            f"this API key was rotated already and expires at {old.expires_at.isoformat()}; rotate its successor "
            "(or revoke this one) instead")


def rotate_key(session: Session, tenant_id: str, key_id: str,
               grace_seconds: int = DEFAULT_KEY_GRACE_SECONDS) -> IssuedKey:
    """Issue a successor of a tenant key (same role, name and rate limit) and let the old one expire
    after ``grace_seconds``. The new plaintext is returned once."""
    grace = _grace(grace_seconds)
    now = utcnow()
    repo = ApiKeyRepository(session, tenant_id)
    old = repo.get(key_id, lock=True)
    if old is None:
        raise NotFound("API key not found")
    if not _usable(old, now):
        raise Conflict("this API key is revoked or expired; create a new key instead")
    _not_rotated(old)
    issued = _new_key(old.role, old.name, tenant_id, old.rate_limit_per_minute)  # type: ignore[arg-type]
    repo.add(issued.key)
    before, expires_at = old.expires_at, _expiry(old, now, grace)
    repo.set_expiry(old.id, expires_at)
    KEYS.clear()
    return replace(issued, replaced_expiry=(before, expires_at))


def rotate_operator_key(session: Session, key_id: str, grace_seconds: int = DEFAULT_KEY_GRACE_SECONDS) -> IssuedKey:
    """Issue a successor of the operator key ``key_id`` (the caller's) and let it expire after the grace.

    This is how ``MIDWATCH_OPERATOR_KEY`` rotates without downtime: store the new key where the
    deployment reads it (the Kubernetes Secret), roll the processes, and the old key stops working
    when its grace ends. A restart with the old value never revives it (it is registered, expired).
    """
    grace = _grace(grace_seconds)
    now = utcnow()
    repo = AccountsPlatformRepository(session)
    old = repo.operator_key(key_id)
    if old is None or not _usable(old, now):
        raise Unauthorized("unknown or revoked API key")
    _not_rotated(old)
    issued = _new_key("operator", old.name, None, old.rate_limit_per_minute)
    repo.add_key(issued.key)
    before, expires_at = old.expires_at, _expiry(old, now, grace)
    repo.set_key_expiry(old.id, expires_at)
    KEYS.clear()
    return replace(issued, replaced_expiry=(before, expires_at))


def revoke_key(session: Session, tenant_id: str, key_id: str) -> None:
    """Revoke a tenant key (NotFound for another tenant's); refused on this process at once."""
    repo = ApiKeyRepository(session, tenant_id)
    if repo.get(key_id) is None:
        raise NotFound("API key not found")
    repo.revoke(key_id)
    KEYS.clear()


def tenant_named(session: Session, name: str) -> Tenant:
    """The tenant called ``name`` (operator paths), or NotFound."""
    return found(AccountsPlatformRepository(session).tenant_by_name(name), f"tenant {name!r}")


def onboard_tenant(session: Session, name: str, display_name: str = "") -> tuple[Tenant, IssuedKey]:
    """Create a tenant, its sealed (empty) audit chain and its first tenant-admin key."""
    if not TENANT_NAME.match(name):
        raise InvalidInput(
            "tenant name must be 2-63 lowercase letters, digits or '-', starting with a letter",
            field="name",
        )
    repo = AccountsPlatformRepository(session)
    if repo.tenant_by_name(name) is not None:
        raise Conflict(f"tenant {name!r} already exists")
    tenant = Tenant(id=new_id("tnt"), name=name, display_name=display_name or name, status="active",
                    created_at=utcnow())
    try:
        with session.begin_nested():
            repo.add_tenant(tenant)
    except IntegrityError as exc:
        raise Conflict(f"tenant {name!r} already exists") from exc
    open_chain(session, tenant.id)  # the tenant's audit trail starts with a sealed, empty head
    return tenant, issue_key(session, tenant.id, "tenant-admin", "first admin key")


def ensure_operator_key(session: Session, supplied: str | None) -> str | None:
    """Make sure an operator key exists.

    With ``supplied`` (``MIDWATCH_OPERATOR_KEY``), that key is registered if new and nothing is
    returned. Without it, a key is generated only when none exists, and its plaintext is returned
    once so the caller can print it.
    """
    repo = AccountsPlatformRepository(session)
    if supplied:
        if len(supplied) < 24:
            raise InvalidInput("MIDWATCH_OPERATOR_KEY must be at least 24 characters")
        if repo.key_by_hash(hash_key(supplied)) is None:
            repo.add_key(ApiKey(id=new_id("key"), tenant_id=None, role="operator", name="MIDWATCH_OPERATOR_KEY",
                                prefix=supplied[:8], key_hash=hash_key(supplied), created_at=utcnow()))
        return None
    if repo.has_operator_key(utcnow()):
        return None
    issued = _new_key("operator", "generated at first start", None)
    repo.add_key(issued.key)
    return issued.plaintext


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """A key found usable, and when: what the per-process cache keeps."""

    principal: Principal
    rate_limit_per_minute: int | None
    expires_at: datetime | None
    verified_at: float  # time.monotonic()


class KeyCache:
    """Verified keys by hash, trusted for :data:`AUTH_CACHE_S` seconds (unknown keys are never cached)."""

    def __init__(self, ttl_s: float = AUTH_CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._keys: dict[str, VerifiedKey] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> VerifiedKey | None:
        with self._lock:
            found = self._keys.get(key_hash)
        if found is None or time.monotonic() - found.verified_at > self.ttl_s:
            return None
        return found

    def put(self, key_hash: str, verified: VerifiedKey) -> None:
        with self._lock:
            if len(self._keys) > 100_000:  # bounded: a flood of distinct valid keys cannot grow it forever
                self._keys.clear()
            self._keys[key_hash] = verified

    def clear(self) -> None:
        """Forget every key (this process changed a key or a tenant: take effect here at once)."""
        with self._lock:
            self._keys.clear()


KEYS = KeyCache()


def bearer_token(authorization: str | None) -> str:
    """The key of ``Authorization: Bearer <key>``, or Unauthorized."""
    if not authorization:
        raise Unauthorized("missing Authorization header (expected 'Bearer <api key>')")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization must be 'Bearer <api key>'")
    return token


def verify_key(session: Session, key_hash: str, now: datetime) -> VerifiedKey:
    """Look a key up: usable (not revoked, not past a rotation's grace), its tenant active; touches
    ``last_used_at`` at most once a minute. Raises Unauthorized or Forbidden (tenant suspended)."""
    repo = AccountsPlatformRepository(session)
    key = repo.key_by_hash(key_hash)
    if key is None or not _usable(key, now):  # an expired key is refused exactly like a revoked one
        raise Unauthorized("unknown or revoked API key")
    if key.tenant_id is not None:
        tenant = repo.tenant(key.tenant_id)
        if tenant is None:
            raise Unauthorized("unknown or revoked API key")
        if tenant.status != "active":
            raise Forbidden("tenant is suspended")
    if key.last_used_at is None or now - key.last_used_at > _TOUCH_EVERY:
        repo.touch_key(key.id, now)
    principal = Principal(key_id=key.id, role=key.role, tenant_id=key.tenant_id)  # type: ignore[arg-type]
    return VerifiedKey(principal, key.rate_limit_per_minute, key.expires_at, time.monotonic())


def authenticate(session: Session, authorization: str | None, *, now: datetime | None = None) -> Principal:
    """Resolve ``Authorization: Bearer <key>`` to a principal (no cache, no rate limit), or raise
    Unauthorized / Forbidden."""
    return verify_key(session, hash_key(bearer_token(authorization)), now or utcnow()).principal


def open_platform_chain(session: Session) -> bool:
    """At start-up: on a fresh installation (no tenant onboarded yet) start the platform audit chain with a
    sealed, empty head. Later a missing platform head is a finding, never silently re-created."""
    if AccountsPlatformRepository(session).list_tenants(after=None, limit=1):
        return False
    return open_chain(session, None)
