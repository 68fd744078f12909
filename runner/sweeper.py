"""The sweeper: re-enqueues runs whose worker died (lease expired) or whose wake-up was lost.

The database is the source of truth; the broker only carries wake-ups. A wiped broker or a
killed worker delays a run by at most one sweep interval plus the lease time, never loses it.
Duplicate wake-ups are harmless: only one worker can hold a run's lease.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from runner.metrics import SWEEPER_REQUEUED
from runner.webhooks import deliver_due
from tenants.approvals.service import expire_due
from tenants.kit.db import dispatch_after_commit, unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.logging import get_logger
from tenants.kit.settings import Settings
from tenants.runs.repository import PlatformRunRepository
from tenants.runs.service import EXECUTE_RUN, wake_grace

__all__ = ["run_sweeper", "sweep_once"]

log = get_logger("sweeper")


def sweep_once(settings: Settings) -> int:
    """One pass: find stranded runs, push their next wake-up time, and enqueue them."""
    now = utcnow()
    with unit_of_work() as session:
        repo = PlatformRunRepository(session)
        stranded = repo.stranded(now)
        repo.snooze(stranded, now + max(wake_grace(), timedelta(seconds=settings.lease_seconds)))
    with unit_of_work() as session:
        expired = expire_due(session, now)  # wakes their runs after commit (on_timeout applies)
    if expired:
        log.info("approvals_expired", approvals=len(expired))
    for run in stranded:
        dispatch_after_commit(EXECUTE_RUN, {"tenant_id": run.tenant_id, "run_id": run.run_id})
    if stranded:
        SWEEPER_REQUEUED.inc(len(stranded))
        log.info("sweeper_requeued", runs=len(stranded))
    return len(stranded)


def run_sweeper(settings: Settings, stop: threading.Event) -> None:
    """Sweep every ``sweep_interval_seconds`` until ``stop`` is set; database errors are logged and retried."""
    while not stop.wait(settings.sweep_interval_seconds):
        try:
            sweep_once(settings)
        except Exception:
            log.warning("sweep_failed", exc_info=True)
        try:  # the webhook outbox rides on the same loop (the scheduler process, and `midwatch up`'s thread)
            deliver_due(settings)
        except Exception:
            log.warning("webhook_delivery_failed", exc_info=True)
