"""Operator sign-in for the dashboard, and the one-time login link of ``midwatch up --demo``.

The dashboard never opens without an operator API key. In ``--demo`` mode the CLI passes the demo
operator key to the dashboard process in ``MIDWATCH_DASHBOARD_DEMO_KEY`` and prints a URL carrying
``?login=<token>`` where ``token = <issued_unix>.<nonce>.<HMAC-SHA256(key, "midwatch-dashboard-login:"
+ issued + ":" + nonce)>``: the CLI can compute it (:func:`demo_login_url`) and the dashboard can check
it without storing anything, the key itself never appears in the URL, a token expires after
:data:`TOKEN_TTL_S`, and each nonce is accepted once per dashboard process.

Nothing here imports Streamlit, so the CLI can import :func:`demo_login_url` cheaply.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from tenants.accounts.service import authenticate
from tenants.kit.db import unit_of_work
from tenants.kit.errors import MidwatchError

__all__ = ["TOKEN_TTL_S", "Operator", "consume_login_token", "demo_login_url", "login_token", "sign_in"]

TOKEN_TTL_S = 24 * 3600
_used: set[str] = set()
_used_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Operator:
    key_id: str
    via: str  # "api key" | "demo link"


def _mac(operator_key: str, issued: int, nonce: str) -> str:
    message = f"midwatch-dashboard-login:{issued}:{nonce}".encode()
    return hmac.new(operator_key.encode(), message, hashlib.sha256).hexdigest()


def login_token(operator_key: str, *, issued: int | None = None, nonce: str | None = None) -> str:
    """A one-time login token for ``operator_key``."""
    issued = int(time.time()) if issued is None else issued
    nonce = nonce or secrets.token_hex(8)
    return f"{issued}.{nonce}.{_mac(operator_key, issued, nonce)}"


def demo_login_url(base_url: str, operator_key: str) -> str:
    """The dashboard URL the CLI prints in ``--demo`` mode (``base_url`` like ``http://127.0.0.1:8501``)."""
    return f"{base_url.rstrip('/')}/?login={login_token(operator_key)}"


def sign_in(api_key: str) -> Operator:
    """Validate an API key; only operators may open the dashboard. Raises MidwatchError otherwise."""
    with unit_of_work() as session:  # authenticate records the key's last use
        principal = authenticate(session, f"Bearer {api_key.strip()}")
    if not principal.is_operator:
        raise _NotOperator("this key is not an operator key: the dashboard shows every tenant")
    return Operator(key_id=principal.key_id, via="api key")


class _NotOperator(MidwatchError):
    code = "forbidden"
    status = 403


def consume_login_token(token: str, demo_key: str | None, *, now: float | None = None) -> Operator | None:
    """Accept a demo login token once; None if it is malformed, forged, expired, reused or demo is off."""
    if not demo_key or not token:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    issued, nonce, mac = int(parts[0]), parts[1], parts[2]
    now = time.time() if now is None else now
    if not 0 <= now - issued <= TOKEN_TTL_S:
        return None
    if not hmac.compare_digest(mac, _mac(demo_key, issued, nonce)):
        return None
    with _used_lock:
        if nonce in _used:
            return None
        _used.add(nonce)
    operator = sign_in(demo_key)
    return Operator(key_id=operator.key_id, via="demo link")
