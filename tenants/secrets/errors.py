"""Errors of the secrets vault (all under the package root ``tenants.kit.errors.MidwatchError``).

    MidwatchError
    ├── NotFound
    │   └── SecretNotFound         404 not_found          (no such secret or version, or grace expired)
    ├── MasterKeyUnavailable       500 master_key_unavailable  (missing, malformed or unreadable key; in
    │                                                           tenants.kit.errors, as the key lives in the kit)
    └── SecretsError               500 secrets_error
        ├── MasterKeyMismatch      500 master_key_mismatch     (a version was wrapped by another master key)
        └── DecryptionFailed       500 secret_unreadable       (integrity check failed: tampered or moved)

None of these messages ever holds a plaintext, a data key or a master key.
"""

from __future__ import annotations

from tenants.kit.errors import MasterKeyUnavailable, MidwatchError, NotFound

__all__ = [
    "DecryptionFailed",
    "MasterKeyMismatch",
    "MasterKeyUnavailable",
    "SecretNotFound",
    "SecretsError",
]


class SecretNotFound(NotFound, LookupError):
    """The secret (or the requested version of it) does not exist for this tenant.

    Also a LookupError, so a tool asking for a missing secret fails with a clean ``auth`` escalation."""


class SecretsError(MidwatchError):
    """Root of the vault's own failures: configuration and integrity, never the caller's input."""

    code = "secrets_error"
    status = 500


class MasterKeyMismatch(SecretsError):
    """The stored data key was wrapped by a different master key than the one this process holds."""

    code = "master_key_mismatch"


class DecryptionFailed(SecretsError):
    """AES-GCM authentication failed: the ciphertext or wrapped key was altered or moved to another row."""

    code = "secret_unreadable"
