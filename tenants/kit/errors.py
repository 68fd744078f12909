"""The one exception root of the ``tenants`` package, and the codes the API maps to problem+json.

    MidwatchError (code, status)
    ├── NotFound              404 not_found
    ├── Conflict              409 conflict
    │   └── IdempotencyConflict   409 idempotency_conflict
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

from typing import Any, ClassVar

__all__ = [
    "BudgetExhausted",
    "Conflict",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidInput",
    "LeaseLost",
    "MidwatchError",
    "NotFound",
    "RateLimited",
    "ScopeViolation",
    "ServiceUnavailable",
    "Unauthorized",
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
