"""structlog set-up: JSON or console lines carrying tenant_id/run_id/step, with secrets redacted.

Redaction has two parts: every value registered with :func:`register_secret` (the secrets a
process has resolved) is replaced by ``[REDACTED]`` wherever it appears, and values whose key
names a credential are masked whatever they hold (:func:`is_sensitive_key`). The key rule is
precise, not a substring match: ``token``, ``access_token``, ``X-Api-Key``, ``clientSecret`` and
``password`` are masked; ``input_tokens``, ``max_tokens``, ``token_url`` and ``idempotency_key``
are counts and names, and stay readable.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote

import structlog

__all__ = ["ValueMask", "configure_logging", "get_logger", "is_sensitive_key", "redact", "redact_processor",
           "register_secret"]

REDACTED = "[REDACTED]"
# Compared after normalising a key to snake_case (X-Api-Key -> x_api_key, clientSecret -> client_secret).
_SENSITIVE_NAMES = frozenset({
    "authorization", "proxy_authorization", "cookie", "set_cookie", "password", "passwd", "passphrase", "pwd",
    "secret", "token", "api_key", "apikey", "credential", "credentials", "private_key", "signature",
})
_SENSITIVE_SUFFIXES = ("_token", "_secret", "_password", "_passwd", "_api_key", "_apikey", "_private_key",
                       "_secret_key", "_access_key", "_credential", "_credentials", "_authorization", "_signature")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_KEY_PATTERN = re.compile(r"\bmw_[a-z]+_[A-Za-z0-9_-]{16,}\b")  # Midwatch API keys
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")

_known: set[str] = set()
_known_lock = threading.Lock()
_known_re: re.Pattern[str] | None = None


def is_sensitive_key(key: str) -> bool:
    """Whether a mapping key or log field names a credential (its value is masked whatever it holds)."""
    name = _CAMEL.sub("_", key).lower().replace("-", "_").strip("_")
    return name in _SENSITIVE_NAMES or name.endswith(_SENSITIVE_SUFFIXES)


def register_secret(values: Iterable[str]) -> None:
    """Remember secret plaintexts so every later log line and decision record redacts them."""
    global _known_re
    with _known_lock:
        added = {v for v in values if v and len(v) >= 4} - _known
        if not added:
            return
        _known.update(added)
        ordered = sorted(_known, key=len, reverse=True)
        _known_re = re.compile("|".join(re.escape(v) for v in ordered))


def redact(value: Any) -> Any:
    """Return ``value`` with every known secret and credential pattern replaced, recursively."""
    if isinstance(value, str):
        out = _known_re.sub(REDACTED, value) if _known_re is not None else value
        out = _KEY_PATTERN.sub(REDACTED, out)
        return _BEARER.sub("Bearer " + REDACTED, out)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_sensitive_key(k) and v else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class ValueMask:
    """Masks exact secret values wherever they appear in a JSON-like value (strings, mapping keys, nested
    lists), with their URL-encoded form: redaction by value, for data that is not a log line (a step's
    output, which an upstream may echo a credential into). Unlike :func:`redact` it leaves keys that merely
    look like credentials alone: a step's ``token`` field may be data the next step needs. Thread-safe.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        """Mask ``value`` from now on (values under 4 characters are too short to mask without garbling)."""
        if not value or len(value) < 4:
            return
        forms = {value, quote(value, safe="")}
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __call__(self, value: Any) -> Any:
        """``value`` with every masked secret replaced by ``[REDACTED]`` (unchanged when none is known)."""
        pattern = self._pattern
        return value if pattern is None else _mask(value, pattern)


def _mask(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {_mask(k, pattern): _mask(v, pattern) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, pattern) for v in value]
    return value


def redact_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor applying :func:`redact` to every field."""
    for key in list(event_dict):
        value = event_dict[key]
        if isinstance(key, str) and is_sensitive_key(key) and value and key != "event":
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact(value)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog once for the process."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to a component name."""
    return structlog.get_logger(component=name)
