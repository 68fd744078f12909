"""Rules for tenants and API keys: onboarding, key issue, authentication. Never commits."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tenants.accounts.models import ApiKey, Tenant
from tenants.accounts.repository import AccountsPlatformRepository, ApiKeyRepository
from tenants.kit.errors import Conflict, Forbidden, InvalidInput, Unauthorized
from tenants.kit.ids import new_id, utcnow

__all__ = [
    "ROLES",
    "IssuedKey",
    "Principal",
    "Role",
    "authenticate",
    "ensure_operator_key",
    "hash_key",
    "issue_key",
    "onboard_tenant",
]

Role = Literal["operator", "tenant-admin", "approver", "viewer"]
ROLES: tuple[Role, ...] = ("operator", "tenant-admin", "approver", "viewer")
TENANT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
_ROLE_TAG = {"operator": "op", "tenant-admin": "adm", "approver": "apr", "viewer": "vw"}
_TOUCH_EVERY = timedelta(seconds=60)


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


def hash_key(plaintext: str) -> str:
    """SHA-256 of a key. Keys carry 256 random bits, so a fast hash is safe for lookup."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _new_key(role: Role, name: str, tenant_id: str | None) -> IssuedKey:
    plaintext = f"mw_{_ROLE_TAG[role]}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        role=role,
        name=name,
        prefix=plaintext[:14],
        key_hash=hash_key(plaintext),
        created_at=utcnow(),
    )
    return IssuedKey(key=key, plaintext=plaintext)


def issue_key(session: Session, tenant_id: str, role: Role, name: str = "") -> IssuedKey:
    """Create a tenant key; the plaintext is returned once."""
    if role == "operator":
        raise Forbidden("tenant keys cannot carry the operator role")
    issued = _new_key(role, name, tenant_id)
    ApiKeyRepository(session, tenant_id).add(issued.key)
    return issued


def onboard_tenant(session: Session, name: str, display_name: str = "") -> tuple[Tenant, IssuedKey]:
    """Create a tenant and its first tenant-admin key."""
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
    if repo.has_operator_key():
        return None
    issued = _new_key("operator", "generated at first start", None)
    repo.add_key(issued.key)
    return issued.plaintext


def authenticate(session: Session, authorization: str | None) -> Principal:
    """Resolve ``Authorization: Bearer <key>`` to a principal, or raise Unauthorized."""
    if not authorization:
        raise Unauthorized("missing Authorization header (expected 'Bearer <api key>')")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization must be 'Bearer <api key>'")
    repo = AccountsPlatformRepository(session)
    key = repo.key_by_hash(hash_key(token))
    if key is None or key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    if key.tenant_id is not None:
        tenant = repo.tenant(key.tenant_id)
        if tenant is None:
            raise Unauthorized("unknown or revoked API key")
        if tenant.status != "active":
            raise Forbidden("tenant is suspended")
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _TOUCH_EVERY:
        repo.touch_key(key.id, now)
    return Principal(key_id=key.id, role=key.role, tenant_id=key.tenant_id)  # type: ignore[arg-type]

