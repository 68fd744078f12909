"""Per-tenant queue figures for the Overview and Tenants pages: what waits now, and how long starting took.

Two kinds of figure, read in the same session:

- **Live**, from the run queue itself (:meth:`tenants.runs.dispatch.DispatchRepository.queue_figures`, the
  query behind the ``midwatch_queue_*`` gauges and ``midwatch status``): due runnable runs split into
  *waiting* (they start as soon as a worker is free) and *at cap* (held back by a ``concurrent_runs`` limit
  reached right now, the tenant's or their agent's), and the *oldest waiting*: how long the longest-waiting
  due run has waited since it became runnable (submitted, handed back between time slices, or due after a
  back-off).
- **Derived**, from the decision log (:class:`tenants.reliability.models.RunStartWait`): *time-to-start*,
  ``started_at - created_at`` (submission to the first claim by a worker) of the runs whose first start fell in
  the last :data:`TIME_TO_START_MINUTES` minutes (the current minute and the 59 before it), as p50 and p95 by
  nearest rank. They come from a histogram whose buckets are 10 % wide, so each is within 5 % of the exact
  figure, and they are as current as the read models (:class:`tenants.reliability.common.Freshness`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tenants.reliability.derive import bucket_wait_s, minute_of
from tenants.reliability.repository import PlatformReliabilityRepository
from tenants.runs.dispatch import dispatch_repository

__all__ = ["QUEUE_ALERT_AFTER_S", "TIME_TO_START_MINUTES", "TenantQueue", "percentile", "tenant_queues",
           "window_start_minute"]

QUEUE_ALERT_AFTER_S = 300.0  # the Overview highlights a tenant whose oldest waiting run has waited longer
TIME_TO_START_MINUTES = 60  # the time-to-start window: this many minutes of first starts, the current one included


@dataclass(frozen=True, slots=True)
class TenantQueue:
    """One tenant's queue now (live) and its time-to-start over the last hour (derived)."""

    tenant_id: str
    tenant: str
    waiting: int = 0  # due runs that start as soon as a worker is free
    capped: int = 0  # due runs held back by a concurrent_runs cap reached now
    oldest_waiting_s: float | None = None  # the longest-waiting due run's wait; None: nothing due
    running: int = 0  # runs holding a lease (what the cap bounds)
    cap: int | None = None
    weight: int = 1
    started: int = 0  # runs that first started in the window
    start_p50_s: float | None = None
    start_p95_s: float | None = None

    @property
    def depth(self) -> int:
        """Due runs, waiting or at the cap."""
        return self.waiting + self.capped

    @property
    def overdue(self) -> bool:
        """The oldest waiting run has waited longer than :data:`QUEUE_ALERT_AFTER_S`."""
        return self.oldest_waiting_s is not None and self.oldest_waiting_s > QUEUE_ALERT_AFTER_S


def window_start_minute(now: datetime) -> datetime:
    """The first minute of the time-to-start window ending with the current (partial) minute."""
    return minute_of(now) - timedelta(minutes=TIME_TO_START_MINUTES - 1)


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of a wait-bucket histogram, in seconds (None when empty):
    the wait of the bucket holding the ceil(q x n)-th smallest wait."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_wait_s(bucket)
    return None  # unreachable: the last bucket reaches the total


def tenant_queues(session: Session, names: dict[str, str], now: datetime) -> tuple[TenantQueue, ...]:
    """Every tenant of ``names`` (and any other with work due), the longest-waiting first, then by name."""
    histograms: dict[str, dict[int, int]] = defaultdict(dict)
    for tenant_id, bucket, runs in PlatformReliabilityRepository(session).start_waits(window_start_minute(now)):
        histograms[tenant_id][bucket] = runs
    live = {f.tenant_id: f for f in dispatch_repository(session).queue_figures(now)}
    out = []
    for tenant_id in set(names) | {t for t, f in live.items() if f.queued} | set(histograms):
        f, h = live.get(tenant_id), histograms.get(tenant_id, {})
        oldest = None if f is None or f.oldest_runnable_at is None else max(
            0.0, (now - f.oldest_runnable_at).total_seconds())
        out.append(TenantQueue(
            tenant_id, names.get(tenant_id, tenant_id),
            waiting=(f.queued - f.capped) if f else 0, capped=f.capped if f else 0, oldest_waiting_s=oldest,
            running=f.running if f else 0, cap=f.cap if f else None, weight=f.weight if f else 1,
            started=sum(h.values()), start_p50_s=percentile(h, 0.5), start_p95_s=percentile(h, 0.95)))
    return tuple(sorted(out, key=lambda q: (-(q.oldest_waiting_s if q.oldest_waiting_s is not None else -1.0),
                                            q.tenant)))
