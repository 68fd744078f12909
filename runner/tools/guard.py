"""One guarded HTTP exchange, shared by tenant HTTP tools and remote model providers.

:class:`GuardedEndpoint` does the bookkeeping both need around a request: ask the circuit breaker
first, send through the :class:`~runner.tools.egress.EgressClient` with the request's timeout capped
by the step's deadline (:mod:`runner.deadline`), validate the answer
(:func:`~runner.tools.validate.validate_response`), tell the breaker how the host behaved, and retry
per :mod:`runner.tools.retry`, recording every attempt (:attr:`GuardedEndpoint.attempts` for the
calling thread, also when the call raised).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from runner.deadline import bounded
from runner.errors import StepFailed
from runner.tools.breaker import CircuitBreaker
from runner.tools.egress import EgressBlocked, EgressClient
from runner.tools.retry import RELEASE_THRESHOLD_S, RetryDecision, RetryPolicy, run_with_retries
from runner.tools.validate import validate_response

__all__ = ["GuardedEndpoint"]

T = TypeVar("T")


class GuardedEndpoint:
    """Breaker, timeout, validation and retries around requests to one host (``breaker_key``).

    ``breaker`` may be None (no circuit breaking). ``sleep``, ``clock`` (epoch seconds) and ``rng`` are
    injectable for tests."""

    def __init__(self, client: EgressClient, breaker: CircuitBreaker | None, breaker_key: str, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 release_threshold_s: float = RELEASE_THRESHOLD_S) -> None:
        self.client = client
        self._breaker = breaker
        self._breaker_key = breaker_key
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._release_threshold_s = release_threshold_s
        self._local = threading.local()

    @property
    def attempts(self) -> list[RetryDecision]:
        """The attempts of this thread's latest :meth:`retrying` call (also when it raised)."""
        found: list[RetryDecision] = getattr(self._local, "attempts", [])
        return found

    def retrying(self, attempt: Callable[[int], T], *, policy: RetryPolicy, what: str, unsafe: bool = False,
                 refresh_auth: Callable[[StepFailed], bool] | None = None,
                 start_attempt: int = 1) -> tuple[T, list[RetryDecision]]:
        """Run ``attempt(number)`` until it returns, per :func:`~runner.tools.retry.run_with_retries`;
        the value and every attempt."""
        log: list[RetryDecision] = []
        self._local.attempts = log
        value = run_with_retries(attempt, policy=policy, what=what, log=log, unsafe=unsafe,
                                 refresh_auth=refresh_auth, sleep=self._sleep, rng=self._rng,
                                 release_threshold_s=self._release_threshold_s, start_attempt=start_attempt)
        return value, log

    def send(self, what: str, method: str, url: str, *, headers: dict[str, str], json: Any, timeout_s: float,
             content_type: str | None, schema: dict[str, Any] | None) -> Any:
        """One attempt: the breaker's permission, the request, the validated body. Failures are StepFailed
        (``retryable`` in their details when another attempt may help); the breaker hears of each."""
        if self._breaker is not None:
            decision = self._breaker.allow(self._breaker_key, self._clock())
            if not decision.allowed:
                raise StepFailed("dependency", f"{what}: {decision.reason}",
                                 details={"breaker": decision.state, "breaker_retry_at": decision.retry_at,
                                          "retryable": False, "sent": False})
        try:
            response = self.client.request(method, url, headers=headers, json=json, timeout_s=bounded(timeout_s))
            value = validate_response(response, content_type, schema)
        except EgressBlocked:
            raise
        except StepFailed as exc:
            self._tell_breaker(exc)
            raise
        if self._breaker is not None:
            self._breaker.record_success(self._breaker_key, self._clock())
        return value

    def _tell_breaker(self, exc: StepFailed) -> None:
        if self._breaker is None:
            return
        if exc.category == "dependency" and exc.details.get("retryable"):
            self._breaker.record_failure(self._breaker_key, self._clock(), exc.reason[:200])
        elif "status" in exc.details:
            self._breaker.record_success(self._breaker_key, self._clock())  # the host answered sanely
