"""structlog set-up: JSON or console lines carrying tenant_id/run_id/step, with secrets redacted.

Context is bound once per unit of work, never passed by hand: :func:`bind_work` (a context manager over
structlog's contextvars) for a worker's run, item and step; :func:`request_context` and
:func:`annotate_request` for an API request (its id, then the tenant once the key is resolved). Every line
also carries the active OpenTelemetry ``trace_id``/``span_id`` when tracing is on, so one id leads from an
alert to the log line and to the decision event. Standard-library loggers (Dramatiq, uvicorn, Alembic) are
routed through the same chain, so in JSON mode every line a process writes is one JSON object.

Redaction has two parts: every value registered with :func:`register_secret` (the secrets a
process has resolved) is replaced by ``[REDACTED]`` wherever it appears, and values whose key
names a credential are masked whatever they hold (:func:`is_sensitive_key`). The key rule is
precise, not a substring match: ``token``, ``access_token``, ``X-Api-Key``, ``clientSecret`` and
``password`` are masked; ``input_tokens``, ``max_tokens``, ``token_url`` and ``idempotency_key``
are counts and names, and stay readable.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import structlog

from tenants.kit.tracing import current_span_id, current_trace_id

__all__ = [
    "CONTEXT_KEYS",
    "ValueMask",
    "annotate_request",
    "bind_work",
    "bound_work",
    "configure_logging",
    "get_logger",
    "is_sensitive_key",
    "redact",
    "redact_processor",
    "register_secret",
    "request_context",
    "unbind_work",
]

# The fields a unit of work binds (README "Logs"): every log line under it carries them.
CONTEXT_KEYS = frozenset({"tenant_id", "run_id", "agent", "item", "step", "attempt", "failure_category",
                          "request_id"})
# bind_work's fields; never mutated in place (bind_work and unbind_work set a new dict), so a shared default is safe
_work_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "midwatch_work_fields", default={})  # noqa: B039
_request_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "midwatch_request_fields", default=None)
_OUR_HANDLER = "midwatch"

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


@lru_cache(maxsize=4096)  # every step's event redacts the same few keys ("check", "ok", "attempt", ...)
def is_sensitive_key(key: str) -> bool:
    """Whether a mapping key or log field names a credential (its value is masked whatever it holds)."""
    name = _CAMEL.sub("_", key).lower().replace("-", "_").strip("_")
    return name in _SENSITIVE_NAMES or name.endswith(_SENSITIVE_SUFFIXES)


def register_secret(values: Iterable[str]) -> None:
    """Remember secret plaintexts so every later log line and decision record redacts them."""
    global _known_re, _generation
    with _known_lock:
        added = {v for v in values if v and len(v) >= 4} - _known
        if not added:
            return
        _known.update(added)
        ordered = sorted(_known, key=len, reverse=True)
        _known_re = re.compile("|".join(re.escape(v) for v in ordered))
        _generation += 1  # after the pattern: a text cached under the new generation was redacted with it
        _redact_short.cache_clear()


_CACHED_TEXT = 256  # characters: the short texts every step's event repeats (why, chosen, rule texts)


_generation = 0  # of the known secrets: a text redacted under an older set is never served again


def _redact_text(value: str) -> str:
    if len(value) <= _CACHED_TEXT:
        return _redact_short(value, _generation)
    return _redact_uncached(value)


@lru_cache(maxsize=8192)
def _redact_short(value: str, _generation: int) -> str:
    return _redact_uncached(value)


def _redact_uncached(value: str) -> str:
    out = _known_re.sub(REDACTED, value) if _known_re is not None else value
    if "mw_" in out:  # what _KEY_PATTERN needs; most text has none, and `in` costs a tenth of a search
        out = _KEY_PATTERN.sub(REDACTED, out)
    return _BEARER.sub("Bearer " + REDACTED, out)


_LEAVES = frozenset({int, float, bool, type(None)})


def redact(value: Any) -> Any:
    """Return ``value`` with every known secret and credential pattern replaced, recursively."""
    kind = type(value)
    if kind in _LEAVES:  # the exact types first: every step's event goes through here
        return value
    if kind is str or isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, dict):
        return {  # scalars inline: a step's verdicts are dicts of a few bools and numbers
            k: (REDACTED if v and (type(k) is str or isinstance(k, str)) and is_sensitive_key(k)
                else v if type(v) in _LEAVES else _redact_text(v) if type(v) is str else redact(v))
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


def _check_keys(fields: dict[str, Any]) -> None:
    unknown = set(fields) - CONTEXT_KEYS
    if unknown:
        raise ValueError(f"not a log context field: {sorted(unknown)} (known: {sorted(CONTEXT_KEYS)})")


@contextmanager
def bind_work(**fields: Any) -> Iterator[None]:
    """Bind context fields (``tenant_id``, ``run_id``, ``agent``, ``item``, ``step``, ``attempt``,
    ``failure_category``, ``request_id``) for the ``with`` block; ``None`` values are left out.

    Nested blocks add fields (a step inside a run) and restore the outer ones on exit, so a worker thread
    never carries one run's fields into the next message. The fields live in one context variable holding
    a dict (structlog's own binds one variable per field: three times the work on every step).
    """
    _check_keys(fields)
    token = _work_fields.set({**_work_fields.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _work_fields.reset(token)


def unbind_work(*keys: str) -> None:
    """Drop fields bound earlier in the current block (e.g. ``failure_category`` once a retry succeeds)."""
    current = _work_fields.get()
    if any(key in current for key in keys):
        _work_fields.set({k: v for k, v in current.items() if k not in keys})


def bound_work() -> dict[str, Any]:
    """The context fields bound now (by :func:`bind_work`, or by structlog's own contextvars)."""
    return {**structlog.contextvars.get_contextvars(), **_work_fields.get()}


def _merge_work_fields(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in _work_fields.get().items():
        event_dict.setdefault(key, value)
    return event_dict


@contextmanager
def request_context(request_id: str) -> Iterator[dict[str, Any]]:
    """The context of one API request: log lines under it carry ``request_id`` and whatever
    :func:`annotate_request` adds later, even from the worker threads the request's sync handlers run in."""
    fields: dict[str, Any] = {"request_id": request_id}
    token = _request_fields.set(fields)
    try:
        yield fields
    finally:
        _request_fields.reset(token)


def annotate_request(**fields: Any) -> None:
    """Add fields (``tenant_id``) to the current request's log context; a no-op outside a request.

    The request's field dict is shared by reference with every context copied from it, so a field set in a
    dependency running in a worker thread shows in the handler's log lines too.
    """
    _check_keys(fields)
    current = _request_fields.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def _merge_request_fields(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    current = _request_fields.get()
    if current:
        for key, value in current.items():
            event_dict.setdefault(key, value)
    return event_dict


def _add_trace_ids(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    trace_id = current_trace_id()
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
        event_dict.setdefault("span_id", current_span_id())
    return event_dict


class _Stderr:
    """``sys.stderr`` as it is when a line is written, not when logging was configured: a stream swapped in
    meanwhile and closed since (a test's captured output, an embedding application's redirect) must not make
    every later log call raise."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog once for the process, and route standard-library logging through the same chain."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _merge_work_fields,
        _merge_request_fields,
        _add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.set_name(_OUR_HANDLER)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                    redact_processor, renderer]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _OUR_HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for noisy in ("httpx", "httpcore", "pika", "urllib3"):  # one line per HTTP request or frame: not useful
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    for own in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # if uvicorn installed its own handlers: use ours
        library = logging.getLogger(own)
        library.handlers.clear()
        library.propagate = True


def get_logger(name: str) -> Any:
    """A structlog logger bound to a component name."""
    return structlog.get_logger(component=name)
