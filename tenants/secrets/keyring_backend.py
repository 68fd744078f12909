"""``MidwatchKeyring``: the ``keyring`` backend over the vault, and the runner's way in.

Addressing: service ``midwatch:<tenant_id>``, username ``<secret name>`` for the current value,
``<secret name>#pending`` / ``<secret name>#previous`` for the staged ones (names cannot hold '#').

The backend is selected explicitly with :func:`install_keyring`; its ``priority`` raises, which
makes keyring's auto-detection (and its chainer) treat it as not viable, so it is never picked for
some other program's ``keyring.get_password``. The runner resolves secrets only through
:func:`get_secret`, which goes through ``keyring.get_password`` and refuses any other backend.
"""

from __future__ import annotations

import keyring
import keyring.errors
from keyring.backend import KeyringBackend
from keyring.compat import properties

from tenants.kit.db import unit_of_work
from tenants.kit.errors import MidwatchError
from tenants.kit.logging import register_secret
from tenants.secrets import service as vault
from tenants.secrets.errors import SecretNotFound, SecretsError

__all__ = [
    "SERVICE_PREFIX",
    "MidwatchKeyring",
    "get_secret",
    "get_secret_for_retry",
    "install_keyring",
    "service_name",
    "username",
]

SERVICE_PREFIX = "midwatch:"
_STAGE_SEP = "#"


def service_name(tenant_id: str) -> str:
    """The keyring service of a tenant's secrets."""
    return f"{SERVICE_PREFIX}{tenant_id}"


def username(name: str, which: vault.Which = "current") -> str:
    """The keyring username of a secret's ``which`` version."""
    return name if which == "current" else f"{name}{_STAGE_SEP}{which}"


def _parse(service_: str, user: str) -> tuple[str, str, vault.Which] | None:
    if not service_.startswith(SERVICE_PREFIX) or not user:
        return None
    tenant_id = service_.removeprefix(SERVICE_PREFIX)
    name, sep, stage = user.partition(_STAGE_SEP)
    if not tenant_id or not name:
        return None
    if not sep:
        return tenant_id, name, "current"
    if stage == "pending":
        return tenant_id, name, "pending"
    if stage == "previous":
        return tenant_id, name, "previous"
    return None


class MidwatchKeyring(KeyringBackend):
    """Tenant secrets in Midwatch's database, envelope-encrypted; each call is its own short transaction."""

    @properties.classproperty
    def priority(cls) -> float:
        # Raising marks the backend "not viable": keyring's auto-detection and chainer skip it.
        raise RuntimeError("MidwatchKeyring is only ever selected explicitly (tenants.secrets.install_keyring)")

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring's base __init__ is untyped

    def __str__(self) -> str:  # the base class formats ``priority``, which raises here by design
        return f"{type(self).__module__}.{type(self).__name__} (explicit only)"

    def get_password(self, service: str, username: str) -> str | None:
        """The value of a secret version, or None if the tenant has no such secret or version."""
        parsed = _parse(service, username)
        if parsed is None:
            return None
        tenant_id, name, which = parsed
        try:
            with unit_of_work() as session:
                return vault.resolve(session, tenant_id, name, which)
        except SecretNotFound:
            return None

    def set_password(self, service: str, username: str, password: str) -> None:
        """Create the secret, or stage ``password`` as its ``pending`` value if it exists (promote separately)."""
        parsed = _parse(service, username)
        if parsed is None or parsed[2] != "current":
            raise keyring.errors.PasswordSetError(
                f"expected service '{SERVICE_PREFIX}<tenant_id>' and a secret name as username")
        tenant_id, name, _ = parsed
        try:
            with unit_of_work() as session:
                vault.create_or_rotate(session, tenant_id, name, password)
        except MidwatchError as exc:
            raise keyring.errors.PasswordSetError(exc.detail) from exc

    def delete_password(self, service: str, username: str) -> None:
        """Delete the secret (every version)."""
        parsed = _parse(service, username)
        if parsed is None or parsed[2] != "current":
            raise keyring.errors.PasswordDeleteError("no such Midwatch secret")
        tenant_id, name, _ = parsed
        try:
            with unit_of_work() as session:
                vault.delete_secret(session, tenant_id, name)
        except SecretNotFound as exc:
            raise keyring.errors.PasswordDeleteError(exc.detail) from exc


def install_keyring() -> MidwatchKeyring:
    """Select the Midwatch backend for this process (call once at start-up of every process that resolves)."""
    backend = MidwatchKeyring()
    keyring.set_keyring(backend)
    return backend


def get_secret(tenant_id: str, name: str, which: vault.Which = "current") -> str:
    """A tenant secret's value, through ``keyring.get_password``: the runner's only way to a secret.

    The value is registered with the log redactor before it is returned.
    """
    backend = keyring.get_keyring()
    if not isinstance(backend, MidwatchKeyring):
        raise SecretsError(f"the installed keyring is {type(backend).__name__}, not MidwatchKeyring: call "
                           "tenants.secrets.keyring_backend.install_keyring() at process start")
    value = keyring.get_password(service_name(tenant_id), username(name, which))
    if value is None:
        raise SecretNotFound(f"secret {name!r} has no {which} version" if which != "current"
                             else f"secret {name!r} not found")
    register_secret([value])
    return value


def get_secret_for_retry(tenant_id: str, name: str) -> str | None:
    """The value to retry with once after the ``current`` one got a 401 during a rotation.

    ``pending`` if one is staged (the upstream may already have switched to it), else ``previous``
    while its grace lasts (the upstream may not have switched yet), else None: do not retry.
    """
    stages: tuple[vault.Which, ...] = ("pending", "previous")
    for which in stages:
        try:
            return get_secret(tenant_id, name, which)
        except SecretNotFound:
            continue
    return None
