"""Sending the webhook outbox: signed POSTs through the egress client, retried with backoff, logged per delivery.

Called by the scheduler's loop (runner.sweeper.run_sweeper) every sweep interval. Each pass claims due
deliveries in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two schedulers never
send the same row at once), sends them outside any transaction (a few at a time), then records each
outcome. Delivery is at-least-once: receivers de-duplicate on ``Midwatch-Delivery``.

Outcomes: 2xx → ``delivered``; 408, 429, 5xx, timeout or connection error → retried after
``backoff_delay`` (honouring ``Retry-After``) until :data:`MAX_ATTEMPTS`, then ``failed``; any other
status, or an address the egress policy refuses → ``failed`` at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx

from runner.errors import StepFailed
from runner.tools.egress import EgressBlocked, EgressClient, EgressPolicy, Resolver
from runner.tools.retry import RetryPolicy, backoff_delay, parse_retry_after
from tenants.kit import metrics
from tenants.kit.db import unit_of_work
from tenants.kit.ids import canonical_json, utcnow
from tenants.kit.logging import get_logger
from tenants.kit.settings import Settings
from tenants.webhooks.repository import ClaimedDelivery, webhook_platform_repository
from tenants.webhooks.signing import sign, verify_signature

__all__ = ["MAX_ATTEMPTS", "RETRY_POLICY", "SEND_TIMEOUT_S", "Outcome", "deliver_due", "verify_signature"]

log = get_logger("webhooks")

MAX_ATTEMPTS = 8
RETRY_POLICY = RetryPolicy(max_attempts=MAX_ATTEMPTS, base_delay_s=10.0, max_delay_s=1800.0, multiplier=2.0,
                           jitter="equal")
"""Delays after attempts 1..7: ~10 s, 20 s, 40 s, 80 s, 160 s, 320 s, 640 s (equal jitter): ~20 min in all."""
SEND_TIMEOUT_S = 10.0
_CLAIM_S = SEND_TIMEOUT_S * 3  # a claimed delivery is due again after this if its sender died
_PARALLEL = 8
_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # delivered | pending (retry) | failed
    status: int | None
    error: str | None
    retry_after_s: float | None = None


def _allowed_host(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{parts.port}" if parts.port else shown


def _send(job: ClaimedDelivery, settings: Settings, resolver: Resolver | None,
          transport: httpx.BaseTransport | None) -> Outcome:
    if not job.active:
        return Outcome("failed", None, "endpoint disabled")
    body = canonical_json(job.payload).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "midwatch-webhooks/1",
               "Midwatch-Event": job.event_type, "Midwatch-Delivery": job.id, "Midwatch-Timestamp": timestamp,
               "Midwatch-Signature": sign(job.secret, timestamp, body)}
    policy = EgressPolicy(allowed_hosts=[_allowed_host(job.url)], allow_loopback=settings.allow_loopback_egress,
                          max_response_bytes=4096, timeout_s=SEND_TIMEOUT_S, max_redirects=0)
    try:
        with EgressClient(policy, resolver, transport=transport) as client:
            response = client.request("POST", job.url, headers=headers, content=body)
    except EgressBlocked as exc:
        return Outcome("failed", None, exc.reason)
    except StepFailed as exc:
        return Outcome("pending", None, exc.reason)
    if 200 <= response.status < 300:
        return Outcome("delivered", response.status, None)
    retry_after = parse_retry_after(response.headers.get("retry-after"), utcnow())
    snippet = response.body[:200].decode("utf-8", "replace")
    error = f"HTTP {response.status}" + (f": {snippet}" if snippet else "")
    if response.status >= 500 or response.status in _RETRY_STATUSES:
        return Outcome("pending", response.status, error, retry_after)
    return Outcome("failed", response.status, error)


def _settle(job: ClaimedDelivery, outcome: Outcome, now: datetime) -> str:
    state, next_at = outcome.state, None
    if state == "pending":
        if job.attempt >= MAX_ATTEMPTS:
            state = "failed"
        else:
            next_at = now + timedelta(seconds=backoff_delay(job.attempt, RETRY_POLICY, outcome.retry_after_s))
    with unit_of_work() as session:
        webhook_platform_repository(session).settle(
            job.id, state=state, status=outcome.status, error=(outcome.error or None) and outcome.error[:1000],
            next_attempt_at=next_at, delivered_at=utcnow() if state == "delivered" else None)
    metrics.webhook_attempt(job.tenant_id, job.event_type, "retry" if state == "pending" else state)
    log.info("webhook_attempt", tenant_id=job.tenant_id, delivery=job.id, endpoint=job.endpoint_id,
             event_type=job.event_type, attempt=job.attempt, state=state, status=outcome.status, error=outcome.error)
    return state


def deliver_due(settings: Settings, now: datetime | None = None, limit: int = 50, *,
                resolver: Resolver | None = None, transport: httpx.BaseTransport | None = None,
                clock: Callable[[], datetime] = utcnow) -> int:
    """Send every delivery due at ``now`` (default: the clock), at most ``limit``; returns how many were attempted.

    ``now`` only selects what is due (tests pass a later time to skip backoff); retry times are computed
    from it too. ``resolver``/``transport`` replace DNS and the network (tests).
    """
    now = now or clock()
    with unit_of_work() as session:
        jobs = webhook_platform_repository(session).claim_due(now, limit, now + timedelta(seconds=_CLAIM_S))
    if not jobs:
        return 0

    def attempt(job: ClaimedDelivery) -> None:
        try:
            outcome = _send(job, settings, resolver, transport)
        except Exception as exc:  # a bug must not lose the delivery: it is retried like a failure
            log.warning("webhook_send_error", delivery=job.id, exc_info=True)
            outcome = Outcome("pending", None, f"internal error: {type(exc).__name__}")
        _settle(job, outcome, now)

    with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(jobs)), thread_name_prefix="midwatch-webhook") as pool:
        list(pool.map(attempt, jobs))
    return len(jobs)
