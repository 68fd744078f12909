"""Retry policy: Retry-After parsing, jittered backoff, status classification, the retry loop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from runner.errors import StepFailed
from runner.tools.retry import (
    MAX_RETRY_AFTER_S,
    RETRY_AFTER_CAP_S,
    RetryLater,
    RetryPolicy,
    backoff_delay,
    classify_status,
    parse_retry_after,
    run_with_retries,
)

NOW = datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("2", 2.0), (" 120 ", 120.0), ("0", 0.0), ("-5", 0.0), ("1.5", 1.5),
    (None, None), ("", None), ("soon", None), ("nan", None),
    ("99999999", MAX_RETRY_AFTER_S),
])
def test_parses_delta_seconds_clamping_negative_and_absurd_values(value: str | None,
                                                                   expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parses_http_date_relative_to_now_and_clamps_the_past_to_zero() -> None:
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=30), usegmt=True), NOW) == 30.0
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0.0
    assert parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", NOW) == MAX_RETRY_AFTER_S


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=30, multiplier=2, jitter="none")
    assert [backoff_delay(n, policy) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(50, policy) == 30.0
    assert backoff_delay(10_000, policy) == 30.0  # no overflow
    full = RetryPolicy(jitter="full")
    assert backoff_delay(3, full, rng=lambda: 0.5) == pytest.approx(1.0)
    assert backoff_delay(3, full, rng=lambda: 0.0) == 0.0


def test_retry_after_is_a_lower_bound_above_max_delay_up_to_the_hard_cap() -> None:
    policy = RetryPolicy(max_delay_s=5, jitter="none")
    assert backoff_delay(1, policy, retry_after_s=2) == 2.0
    assert backoff_delay(1, policy, retry_after_s=120) == 120.0
    assert backoff_delay(1, policy, retry_after_s=10 * RETRY_AFTER_CAP_S) == RETRY_AFTER_CAP_S


@pytest.mark.parametrize(("status", "expected"), [
    (429, ("dependency", True)), (503, ("dependency", True)), (502, ("dependency", True)),
    (504, ("dependency", True)), (500, ("dependency", True)), (408, ("dependency", True)),
    (501, ("dependency", False)), (401, ("auth", False)), (403, ("auth", False)),
    (404, ("dependency", False)), (422, ("dependency", False)),
])
def test_classifies_statuses_by_category(status: int, expected: tuple[str, bool]) -> None:
    assert classify_status(status) == expected


def _failing(n_failures: int, **details: object) -> tuple[list[int], Callable[[int], str]]:
    calls: list[int] = []

    def attempt(number: int) -> str:
        calls.append(number)
        if len(calls) <= n_failures:
            raise StepFailed("dependency", f"boom {number}", details={"retryable": True, **details})
        return "done"
    return calls, attempt


def test_gives_up_after_max_attempts_with_every_attempt_in_the_details() -> None:
    calls, attempt = _failing(10)
    slept: list[float] = []
    with pytest.raises(StepFailed) as info:
        run_with_retries(attempt, policy=RetryPolicy(max_attempts=3), what="t", sleep=slept.append)
    assert calls == [1, 2, 3] and len(slept) == 2
    assert "gave up after 3 attempts" in info.value.reason
    assert [a["decided"] for a in info.value.details["attempts"]] == ["retry", "retry", "give_up"]


def test_a_delay_beyond_the_release_threshold_raises_retry_later_without_sleeping() -> None:
    _, attempt = _failing(1, retry_after_s=60.0)
    slept: list[float] = []
    with pytest.raises(RetryLater) as info:
        run_with_retries(attempt, policy=RetryPolicy(), what="t", sleep=slept.append)
    assert slept == [] and info.value.delay_s == 60.0 and info.value.next_attempt == 2
    # An engine unaware of RetryLater still sees a dependency failure.
    assert info.value.category == "dependency"
    # Resuming from next_attempt continues the same budget.
    calls2, attempt2 = _failing(0)
    assert run_with_retries(attempt2, policy=RetryPolicy(), what="t", start_attempt=2) == "done"
    assert calls2 == [2]


def test_unsafe_calls_are_retried_only_when_the_request_never_left() -> None:
    _, attempt = _failing(1, sent=False)
    assert run_with_retries(attempt, policy=RetryPolicy(), what="t", unsafe=True,
                            sleep=lambda _: None) == "done"
    calls, attempt = _failing(1, sent=True)
    with pytest.raises(StepFailed) as info:
        run_with_retries(attempt, policy=RetryPolicy(), what="t", unsafe=True, sleep=lambda _: None)
    assert calls == [1] and info.value.action == "escalate" and "outcome unknown" in info.value.reason
