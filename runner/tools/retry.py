"""Retries by failure category: jittered exponential backoff that honours ``Retry-After``.

Every outbound call (tenant HTTP tools, model providers) goes through :func:`run_with_retries`,
so one set of rules decides what happens after a failed attempt:

- only ``dependency`` failures marked ``retryable`` are retried (see :func:`classify_status`);
- an ``auth`` failure may be retried exactly once after the caller refreshed its credentials;
- an *unsafe* call (a side effect that does not send an idempotency key) is retried only when
  the failed attempt provably never reached the server (DNS or connect failure);
- a ``Retry-After`` is a lower bound on the delay, even above ``max_delay_s``, up to
  :data:`RETRY_AFTER_CAP_S` (one hour); a server asking for more makes us give up instead of
  hammering it early;
- a delay above :data:`RELEASE_THRESHOLD_S` is not slept in the worker thread: :class:`RetryLater`
  is raised so the engine re-enqueues the step with that delay and frees the worker.

Each attempt is recorded as a :class:`RetryDecision` for the run's decision log.

Errors (both are ``runner.errors.StepFailed``, category ``dependency``)::

    StepFailed
    └── RetryLater      retry_later     (.delay_s, .next_attempt, .decisions)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.errors import FailureAction, FailureCategory, StepFailed

__all__ = [
    "MAX_RETRY_AFTER_S",
    "RELEASE_THRESHOLD_S",
    "RETRY_AFTER_CAP_S",
    "Decided",
    "RetryDecision",
    "RetryLater",
    "RetryPolicy",
    "backoff_delay",
    "classify_status",
    "parse_retry_after",
    "run_with_retries",
]

RELEASE_THRESHOLD_S = 5.0
"""A backoff longer than this releases the worker (:class:`RetryLater`) instead of sleeping."""

RETRY_AFTER_CAP_S = 3600.0
"""The longest ``Retry-After`` we honour; a server asking for more is given up on."""

MAX_RETRY_AFTER_S = 86400.0
""":func:`parse_retry_after` clamps absurd values (a date in 2099) to one day."""

T = TypeVar("T")

Decided = Literal["ok", "retry", "release", "give_up", "refresh_auth"]


class RetryPolicy(BaseModel):
    """How often and how patiently to retry a retryable failure.

    ``max_attempts`` counts every request sent (the first one included), across releases;
    an OAuth token refresh grants one extra attempt.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=10)
    base_delay_s: float = Field(default=0.5, ge=0, le=60)
    max_delay_s: float = Field(default=30.0, ge=0, le=RETRY_AFTER_CAP_S)
    multiplier: float = Field(default=2.0, ge=1, le=10)
    jitter: Literal["full", "equal", "none"] = "full"

    @model_validator(mode="after")
    def _cap_above_base(self) -> RetryPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must be >= base_delay_s")
        return self


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """One attempt and what was decided after it, as written into the decision log."""

    attempt: int
    decided: Decided
    category: FailureCategory | None = None  # None when the attempt succeeded
    status: int | None = None
    error: str | None = None
    delay_s: float = 0.0
    retry_after_s: float | None = None
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for decision events and ``StepFailed.details``)."""
        return asdict(self)


class RetryLater(StepFailed):
    """The next attempt should run after ``delay_s``: re-enqueue the step instead of sleeping.

    It is a ``dependency`` StepFailed so an engine that does not know it still treats it as a
    dependency failure (fallback/escalate); an engine that does should catch it *before*
    StepFailed, re-enqueue with ``delay_s`` and pass ``next_attempt`` back as ``start_attempt``.
    """

    code = "retry_later"

    def __init__(self, delay_s: float, reason: str, *, next_attempt: int,
                 decisions: list[RetryDecision] | None = None) -> None:
        self.delay_s = delay_s
        self.next_attempt = next_attempt
        self.decisions: list[RetryDecision] = list(decisions or [])
        super().__init__(
            "dependency", reason, attempts=max(1, next_attempt - 1),
            details={"retry_after_s": delay_s, "next_attempt": next_attempt, "retryable": True,
                     "attempts": [d.to_dict() for d in self.decisions]},
        )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), else None.

    Negative deltas and dates in the past give 0; values above :data:`MAX_RETRY_AFTER_S` are
    clamped to it. A value that is neither form (or not finite) gives None (ignored).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        base = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        seconds = (when - base).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay(attempt: int, policy: RetryPolicy, retry_after_s: float | None = None,
                  rng: Callable[[], float] = random.random) -> float:
    """The delay before the attempt after ``attempt`` (1-based number of the one that failed).

    Exponential ``base * multiplier**(attempt-1)`` capped at ``max_delay_s``, then jittered
    ("full": uniform in [0, d]; "equal": [d/2, d]; "none": d). A ``retry_after_s`` is a lower
    bound, honoured above ``max_delay_s`` up to :data:`RETRY_AFTER_CAP_S`.
    """
    exponent = max(0, attempt - 1)
    # Compare in log space so a large attempt number cannot overflow the float.
    if policy.base_delay_s <= 0:
        capped = 0.0
    elif exponent * math.log(policy.multiplier) > math.log(policy.max_delay_s / policy.base_delay_s + 1e-12):
        capped = policy.max_delay_s
    else:
        capped = min(policy.max_delay_s, policy.base_delay_s * policy.multiplier ** exponent)
    if policy.jitter == "full":
        delay = rng() * capped
    elif policy.jitter == "equal":
        delay = capped / 2 + rng() * capped / 2
    else:
        delay = capped
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_S))
    return delay


def classify_status(status: int) -> tuple[FailureCategory, bool]:
    """The failure category of an HTTP error status and whether retrying may help.

    408, 429 and 5xx (except 501 and 505, which will not change) are retryable dependency
    failures; 401/403 are ``auth``; any other 4xx is a non-retryable dependency failure.
    Raises ValueError for a status below 400 (not a failure).
    """
    if status < 400:
        raise ValueError(f"status {status} is not an error")
    if status in (401, 403):
        return "auth", False
    if status in (408, 429):
        return "dependency", True
    if status >= 500:
        return "dependency", status not in (501, 505)
    return "dependency", False


def run_with_retries(attempt_fn: Callable[[int], T], *, policy: RetryPolicy, what: str,
                     log: list[RetryDecision] | None = None, unsafe: bool = False,
                     refresh_auth: Callable[[StepFailed], bool] | None = None,
                     sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random,
                     release_threshold_s: float = RELEASE_THRESHOLD_S, start_attempt: int = 1) -> T:
    """Call ``attempt_fn(attempt_number)`` until it returns, retrying per the module's rules.

    ``attempt_fn`` raises StepFailed on failure; the loop reads ``details["retryable"]``,
    ``details["retry_after_s"]``, ``details["status"]`` and ``details["sent"]`` (False when the
    request never reached the server). ``refresh_auth(exc)`` is called once on an ``auth``
    failure and returns True when new credentials make one more attempt worthwhile.
    ``unsafe`` marks a side effect without an idempotency key. Every attempt is appended to
    ``log``. The final failure is re-raised as StepFailed with ``details["attempts"]``; a long
    delay raises :class:`RetryLater`.
    """
    decisions: list[RetryDecision] = log if log is not None else []
    attempt = start_attempt
    bonus = 0  # attempts granted by an auth refresh do not consume the retry budget
    while True:
        started = time.perf_counter()
        try:
            value = attempt_fn(attempt)
        except RetryLater:
            raise
        except StepFailed as exc:
            record = _failed_attempt(exc, attempt, started)
            retry_after = record.retry_after_s
            if exc.category == "auth" and refresh_auth is not None and bonus == 0 and refresh_auth(exc):
                bonus = 1
                decisions.append(replace(record, decided="refresh_auth"))
                attempt += 1
                continue
            stop = _why_stop(exc, attempt - bonus, policy, unsafe=unsafe, retry_after=retry_after)
            if stop is not None:
                suffix, action = stop
                decisions.append(record)
                raise StepFailed(
                    exc.category, exc.reason + suffix, action=action, attempts=attempt,
                    details={**exc.details, "attempts": [d.to_dict() for d in decisions]},
                ) from exc
            delay = backoff_delay(attempt - bonus, policy, retry_after, rng)
            if delay > release_threshold_s:
                decisions.append(replace(record, decided="release", delay_s=delay))
                raise RetryLater(
                    delay, f"{what}: {exc.reason}; next attempt in {delay:.1f}s (worker released)",
                    next_attempt=attempt + 1, decisions=decisions,
                ) from exc
            decisions.append(replace(record, decided="retry", delay_s=delay))
            sleep(delay)
            attempt += 1
        else:
            decisions.append(RetryDecision(attempt, "ok", elapsed_ms=(time.perf_counter() - started) * 1000))
            return value


def _failed_attempt(exc: StepFailed, attempt: int, started: float) -> RetryDecision:
    """The record of a failed attempt (decided ``give_up`` until the loop decides otherwise)."""
    raw_status = exc.details.get("status")
    raw_after = exc.details.get("retry_after_s")
    return RetryDecision(attempt, "give_up", exc.category, raw_status if isinstance(raw_status, int) else None,
                         exc.reason, 0.0, float(raw_after) if isinstance(raw_after, int | float) else None,
                         (time.perf_counter() - started) * 1000)


def _why_stop(exc: StepFailed, used: int, policy: RetryPolicy, *, unsafe: bool,
              retry_after: float | None) -> tuple[str, FailureAction] | None:
    """None when ``exc`` should be retried, else (reason suffix, action) for giving up."""
    if exc.category != "dependency" or not exc.details.get("retryable"):
        return "", exc.action
    if unsafe and exc.details.get("sent", True):
        return ("; not retried: the side effect sends no idempotency key and the request may have "
                "reached the server (outcome unknown)"), "escalate"
    if used >= policy.max_attempts:
        return f"; gave up after {used} attempts", exc.action
    if retry_after is not None and retry_after > RETRY_AFTER_CAP_S:
        return f"; Retry-After {retry_after:.0f}s exceeds the {RETRY_AFTER_CAP_S:.0f}s cap", exc.action
    return None
