"""The master key: the one key that wraps every secret's data key.

Where it comes from, in order:

1. ``MIDWATCH_MASTER_KEY``: base64 of 32 random bytes (``openssl rand -base64 32``);
2. ``MIDWATCH_MASTER_KEY_FILE``: a file holding the same base64 text (surrounding whitespace is
   ignored), e.g. a mounted Kubernetes Secret;
3. embedded mode only: ``<data_dir>/master.key``, generated with mode 0600 on first use and
   reused after. Production refuses to start without 1 or 2 (``Settings`` validates it, and
   :func:`load_master_key` checks again).

A key is known by its *key id*, an HMAC of a fixed label under the key: stored next to every
wrapped data key so a wrong key fails with a clear message instead of a bare integrity error, and
safe to show (it reveals nothing about the key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tenants.kit.errors import MasterKeyUnavailable
from tenants.kit.logging import get_logger
from tenants.kit.settings import Settings, get_settings

__all__ = [
    "KEY_BYTES",
    "MasterKey",
    "embedded_key_path",
    "get_master_key",
    "load_master_key",
    "master_key_source",
    "parse_master_key",
    "write_key_file",
]

KEY_BYTES = 32
EMBEDDED_KEY_FILE = "master.key"
_ID_LABEL = b"midwatch/master-key-id/v1"
log = get_logger("secrets")


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A 256-bit master key and its public id. ``repr`` never shows the key."""

    key: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise MasterKeyUnavailable(f"a master key must be {KEY_BYTES} bytes, got {len(self.key)}")
        digest = hmac.new(self.key, _ID_LABEL, hashlib.sha256).hexdigest()
        object.__setattr__(self, "key_id", f"mk_{digest[:16]}")

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random key."""
        return cls(os.urandom(KEY_BYTES))

    def derive(self, label: bytes) -> bytes:
        """A 256-bit key for one purpose (``label``), derived from this key (HMAC-SHA256 as a PRF): knowing a
        derived key reveals nothing about the master key or any other derived key."""
        return hmac.new(self.key, b"midwatch/derived/" + label, hashlib.sha256).digest()

    def to_b64(self) -> str:
        """The key as MIDWATCH_MASTER_KEY expects it. Print it only to an operator who asked."""
        return base64.b64encode(self.key).decode()


def parse_master_key(text: str | bytes, source: str) -> MasterKey:
    """Decode a master key from base64 text; ``source`` names it in errors.

    Only base64 is accepted (not raw bytes): one format, and a typed passphrase can never pass as a key.
    """
    raw = text.encode() if isinstance(text, str) else text
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyUnavailable(f"{source} is not valid base64 (expected base64 of {KEY_BYTES} random bytes, "
                                   "e.g. `openssl rand -base64 32`)") from None
    if len(decoded) != KEY_BYTES:
        raise MasterKeyUnavailable(f"{source} decodes to {len(decoded)} bytes; a master key is {KEY_BYTES} bytes "
                                   "(`openssl rand -base64 32`)")
    return MasterKey(decoded)


def master_key_source(settings: Settings) -> Literal["env", "file", "embedded"]:
    """Where :func:`load_master_key` takes the key from."""
    if settings.master_key is not None:
        return "env"
    if settings.master_key_file is not None:
        return "file"
    return "embedded"


def embedded_key_path(settings: Settings) -> Path:
    """The embedded mode's generated key file."""
    return settings.data_dir / EMBEDDED_KEY_FILE


def write_key_file(path: Path, key: MasterKey) -> None:
    """Write ``key`` to a new file ``path`` with mode 0600 (fails if it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.to_b64() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_master_key(settings: Settings) -> MasterKey:
    """The configured master key; in embedded mode, generated into the data dir if absent."""
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value(), "MIDWATCH_MASTER_KEY")
    if settings.master_key_file is not None:
        try:
            content = settings.master_key_file.read_bytes()
        except OSError as exc:
            raise MasterKeyUnavailable(
                f"MIDWATCH_MASTER_KEY_FILE {settings.master_key_file} cannot be read: {exc.strerror}") from None
        return parse_master_key(content, f"MIDWATCH_MASTER_KEY_FILE {settings.master_key_file}")
    if settings.env != "embedded":
        raise MasterKeyUnavailable(
            "no secrets master key: MIDWATCH_ENV=production needs MIDWATCH_MASTER_KEY (base64 of 32 random "
            "bytes) or MIDWATCH_MASTER_KEY_FILE; only the embedded mode generates one")
    return _embedded_key(embedded_key_path(settings))


def _embedded_key(path: Path) -> MasterKey:
    """Read ``path``, or create it (0600, exclusively, so two starting threads agree on one key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate()
    try:
        write_key_file(path, key)
    except FileExistsError:
        return _read_embedded(path)
    log.warning("master_key_generated", path=str(path),
                hint="embedded mode: back this file up with the database; losing it loses every secret")
    return key


def _read_embedded(path: Path) -> MasterKey:
    for _ in range(50):  # another thread may have created the file and not yet written it
        content = path.read_bytes()
        if content.strip():
            break
        threading.Event().wait(0.01)
    if path.stat().st_mode & 0o077:
        log.warning("master_key_file_too_open", path=str(path), mode=oct(path.stat().st_mode & 0o777),
                    hint="chmod 600 it")
    return parse_master_key(content, f"embedded master key file {path}")


_cache_lock = threading.Lock()
_cached: tuple[Settings, MasterKey] | None = None


def get_master_key() -> MasterKey:
    """The process's master key, loaded once per settings object (re-read after ``reset_settings``)."""
    global _cached
    settings = get_settings()
    with _cache_lock:
        if _cached is None or _cached[0] is not settings:
            _cached = (settings, load_master_key(settings))
        return _cached[1]
