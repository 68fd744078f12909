"""Webhook signatures: ``Midwatch-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``.

Receivers verify with :func:`verify_signature` (or the same three lines in their language): recompute
the HMAC over the ``Midwatch-Timestamp`` header, a dot and the raw body; compare in constant time;
refuse timestamps older than the tolerance (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SIGNATURE_VERSION", "sign", "verify_signature"]

SIGNATURE_VERSION = "v1"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``Midwatch-Signature`` header value for ``body`` sent at ``timestamp`` (Unix seconds, as text)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, tolerance_s: float = 300,
                     now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` at ``timestamp`` with ``secret``, and ``timestamp`` is within
    ``tolerance_s`` of ``now``. The header may list several signatures separated by commas (secret rollover)."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in header.split(","))
