"""Circuit breaker per (tenant, host): opens, fails fast, probes half-open, closes."""

from __future__ import annotations

from runner.tools.breaker import BreakerConfig, CircuitBreaker, InMemoryBreakerStore, breaker_key

KEY = breaker_key("acme", "api.example.com")


def _breaker() -> CircuitBreaker:
    config = BreakerConfig(failure_threshold=3, window_s=60, open_for_s=30)
    return CircuitBreaker(config, InMemoryBreakerStore())


def test_opens_after_threshold_failures_within_the_window_and_fails_fast_with_the_probe_time() -> None:
    b = _breaker()
    for t in (0, 1, 2):
        assert b.allow(KEY, t).allowed
        b.record_failure(KEY, t, "503 Service Unavailable")
    decision = b.allow(KEY, 10)
    assert not decision.allowed and decision.state == "open"
    assert decision.retry_at == 32
    assert "next probe at" in decision.reason and "(in 22s)" in decision.reason and "503" in decision.reason


def test_failures_spread_beyond_the_window_do_not_open_it() -> None:
    b = _breaker()
    for t in (0, 70, 140):
        b.record_failure(KEY, t)
    assert b.allow(KEY, 141).state == "closed"


def test_half_open_allows_one_probe_and_a_success_closes_it() -> None:
    b = _breaker()
    for t in (0, 1, 2):
        b.record_failure(KEY, t)
    probe = b.allow(KEY, 33)
    assert probe.allowed and probe.probe and probe.state == "half_open"
    assert not b.allow(KEY, 33.5).allowed  # only one probe in flight
    b.record_success(KEY, 34)
    assert b.allow(KEY, 35).state == "closed"
    assert b.snapshot(KEY, 35)["failures"] == 0


def test_a_failed_probe_reopens_and_a_lost_probe_expires() -> None:
    b = _breaker()
    for t in (0, 1, 2):
        b.record_failure(KEY, t)
    assert b.allow(KEY, 33).probe
    b.record_failure(KEY, 34)
    assert b.allow(KEY, 40).state == "open"
    assert b.snapshot(KEY, 40)["next_probe_at"] is not None
    assert b.allow(KEY, 64).probe  # 30 s after re-opening
    # That probe never reports (worker died): after open_for_s another probe is allowed.
    assert not b.allow(KEY, 80).allowed
    assert b.allow(KEY, 95).probe


def test_breakers_are_per_tenant_and_host() -> None:
    b = _breaker()
    for t in (0, 1, 2):
        b.record_failure(KEY, t)
    assert b.allow(breaker_key("other-tenant", "api.example.com"), 3).allowed
    assert not b.allow(KEY, 3).allowed
