"""structlog set-up: JSON or console lines carrying tenant_id/run_id/step, with secrets redacted.

Redaction has two parts: every value registered with :func:`register_secret` (the secrets a
process has resolved) is replaced by ``[REDACTED]`` wherever it appears, and values whose key
looks like a credential (``authorization``, ``api_key``, ``password``, ``token``, ``secret``) are
masked whatever they hold.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "redact", "redact_processor", "register_secret"]

REDACTED = "[REDACTED]"
_SENSITIVE_KEY = re.compile(r"(authorization|api[_-]?key|password|passwd|secret|token|credential)", re.I)
_KEY_PATTERN = re.compile(r"\bmw_[a-z]+_[A-Za-z0-9_-]{16,}\b")  # Midwatch API keys
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")

_known: set[str] = set()
_known_lock = threading.Lock()
_known_re: re.Pattern[str] | None = None


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
            k: (REDACTED if isinstance(k, str) and _SENSITIVE_KEY.search(k) and v else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor applying :func:`redact` to every field."""
    for key in list(event_dict):
        value = event_dict[key]
        if isinstance(key, str) and _SENSITIVE_KEY.search(key) and value and key != "event":
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
