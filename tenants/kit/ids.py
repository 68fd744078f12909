"""Identifiers and time. Ids are time-ordered (sortable, so cursors are plain ids) and prefixed by kind."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["canonical_json", "new_id", "sha256_hex", "utcnow"]


def new_id(prefix: str) -> str:
    """``<prefix>_`` + 12 hex digits of milliseconds + 12 random hex digits: unique and time-sortable."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


def utcnow() -> datetime:
    """Timezone-aware UTC now."""
    return datetime.now(UTC)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) for hashing (one encoder: ``json.dumps`` with options
    builds a new one per call, and a step hashes several values)."""
    return _CANONICAL.encode(value)


def sha256_hex(value: Any) -> str:
    """SHA-256 of a value's canonical JSON (or of bytes/str as given)."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode()
    else:
        data = canonical_json(value).encode()
    return hashlib.sha256(data).hexdigest()
