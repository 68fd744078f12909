"""Envelope encryption with AES-256-GCM.

Each secret version gets a fresh random 256-bit *data key* that encrypts the value; the master
key encrypts ("wraps") that data key. Both encryptions carry the same associated data, which binds
tenant id, secret id, secret name and version: a ciphertext or wrapped key copied to another row
(another tenant, secret or version) fails authentication instead of decrypting. Rotating the master
key re-wraps data keys only; values are never re-encrypted and never leave this module in clear
except as the return value of :func:`open_value` (called only by ``service.resolve``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenants.kit.ids import canonical_json
from tenants.kit.master_key import MasterKey
from tenants.secrets.errors import DecryptionFailed, MasterKeyMismatch

__all__ = ["NONCE_BYTES", "Sealed", "associated_data", "open_value", "rewrap", "seal_value"]

NONCE_BYTES = 12
_AAD_LABEL = "midwatch/secret/v1"


@dataclass(frozen=True, slots=True)
class Sealed:
    """What the vault stores for one version. ``wrapped_key`` is the wrap nonce followed by the wrapped key."""

    ciphertext: bytes
    nonce: bytes
    wrapped_key: bytes
    master_key_id: str


def associated_data(tenant_id: str, secret_id: str, name: str, version: int) -> bytes:
    """The bytes every ciphertext of this (tenant, secret, name, version) is bound to."""
    return canonical_json([_AAD_LABEL, tenant_id, secret_id, name, version]).encode()


def seal_value(plaintext: str, master: MasterKey, aad: bytes) -> Sealed:
    """Encrypt ``plaintext`` under a new data key and wrap that key with ``master``."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext.encode(), aad)
    return Sealed(ciphertext=ciphertext, nonce=nonce, wrapped_key=_wrap(data_key, master, aad),
                  master_key_id=master.key_id)


def open_value(sealed: Sealed, master: MasterKey, aad: bytes, what: str) -> str:
    """Decrypt a version; ``what`` names it (never its value) in errors."""
    data_key = _unwrap(sealed, master, aad, what)
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad).decode()
    except InvalidTag:
        raise DecryptionFailed(f"{what}: the ciphertext failed its integrity check (altered, or moved from "
                               "another secret or version)") from None


def rewrap(sealed: Sealed, old: MasterKey, new: MasterKey, aad: bytes, what: str) -> Sealed:
    """The same ciphertext with its data key wrapped by ``new`` instead of ``old``."""
    data_key = _unwrap(sealed, old, aad, what)
    return Sealed(ciphertext=sealed.ciphertext, nonce=sealed.nonce, wrapped_key=_wrap(data_key, new, aad),
                  master_key_id=new.key_id)


def _wrap(data_key: bytes, master: MasterKey, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master.key).encrypt(nonce, data_key, aad)


def _unwrap(sealed: Sealed, master: MasterKey, aad: bytes, what: str) -> bytes:
    if sealed.master_key_id != master.key_id:
        raise MasterKeyMismatch(
            f"{what} was encrypted under master key {sealed.master_key_id} but this process holds "
            f"{master.key_id}: MIDWATCH_MASTER_KEY (or _FILE) is not the key of this vault, or a master key "
            "rotation has not finished / the processes were not restarted with the new key")
    blob = sealed.wrapped_key
    try:
        return AESGCM(master.key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise DecryptionFailed(f"{what}: the wrapped data key failed its integrity check (altered, or moved "
                               "from another secret or version)") from None
