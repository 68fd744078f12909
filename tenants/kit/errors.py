"""The one exception root of the ``tenants`` package, and the codes the API maps to problem+json.

    MidwatchError (code, status)
    ├── NotFound              404 not_found
    ├── Conflict              409 conflict
    │   ├── IdempotencyConflict   409 idempotency_conflict
    │   └── KeyAlreadyRotated     409 key_already_rotated  (a key in its rotation grace cannot rotate again)
    ├── InvalidInput          422 validation_error
    ├── Unauthorized          401 unauthorized
    ├── Forbidden             403 forbidden
    ├── RateLimited           429 rate_limited
    ├── BudgetExhausted       402 budget_exhausted
    ├── ScopeViolation        403 scope_violation
    ├── LeaseLost             409 lease_lost      (a worker lost its run to another owner)
    └── ServiceUnavailable    503 unavailable
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

__all__ = [
    "BudgetExhausted",
    "Conflict",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidInput",
    "KeyAlreadyRotated",
    "LeaseLost",
    "MasterKeyUnavailable",
    "MidwatchError",
    "NotFound",
    "RateLimited",
    "ScopeViolation",
    "ServiceUnavailable",
    "Unauthorized",
    "found",
    "public_reason",
    "scrub_reason",
]


class MidwatchError(Exception):
    """Root of every error Midwatch raises on purpose. ``code`` is stable; clients match on it."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(MidwatchError):
    code = "not_found"
    status = 404


class Conflict(MidwatchError):
    code = "conflict"
    status = 409


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class KeyAlreadyRotated(Conflict):
    code = "key_already_rotated"


class InvalidInput(MidwatchError):
    code = "validation_error"
    status = 422


class Unauthorized(MidwatchError):
    code = "unauthorized"
    status = 401


class Forbidden(MidwatchError):
    code = "forbidden"
    status = 403


class RateLimited(MidwatchError):
    code = "rate_limited"
    status = 429


class BudgetExhausted(MidwatchError):
    code = "budget_exhausted"
    status = 402


class ScopeViolation(MidwatchError):
    code = "scope_violation"
    status = 403


class LeaseLost(MidwatchError):
    code = "lease_lost"
    status = 409


class ServiceUnavailable(MidwatchError):
    code = "unavailable"
    status = 503


# ---------------------------------------------------------------------------------------------
# What an error may say to a client

_INTERNALS = re.compile(
    r"\[SQL:|\[parameters:|\(Background on this error at:|Traceback \(most recent call last\)"
    r'|^\s*File "[^"]*", line \d+|\n\s*(?:DETAIL|HINT|CONTEXT|LINE \d+):',
    re.M)
_DATABASE_MODULES = ("sqlalchemy", "psycopg", "sqlite3", "alembic")
MAX_REASON_CHARS = 500


def scrub_reason(text: str | None) -> str | None:
    """``text`` cut before any SQL statement, bound parameters, database detail or traceback it carries.

    Every reason or error text that leaves through the API passes through this, however it was
    stored (a reason recorded from an unexpected exception may hold a statement and its values).
    """
    if text is None:
        return None
    m = _INTERNALS.search(text)
    if m is not None:
        text = text[:m.start()].rstrip() + " [internal details removed; see the operator's logs]"
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + "..."


def public_reason(exc: BaseException) -> str:
    """A reason to store and show for an unexpected exception: its type and a scrubbed message; for a
    database error only its type (the statement, its parameters and the server's detail stay in the logs)."""
    module = type(exc).__module__
    if module.startswith(_DATABASE_MODULES) or "[SQL:" in str(exc):
        return f"{type(exc).__name__}: a database error (details in the operator's logs)"
    return f"{type(exc).__name__}: {scrub_reason(str(exc)[:300])}"


def found(value: T | None, what: str) -> T:
    """``value``, or NotFound "``what`` not found" when it is None (also for another tenant's object)."""
    if value is None:
        raise NotFound(f"{what} not found")
    return value


class MasterKeyUnavailable(MidwatchError):
    """No usable master key: not configured (production), malformed, or its file unreadable (500
    ``master_key_unavailable``; raised by :mod:`tenants.kit.master_key`, also listed with the vault's errors)."""

    code = "master_key_unavailable"
    status = 500
