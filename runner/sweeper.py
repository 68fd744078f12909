"""The sweeper: puts runs whose worker died (lease expired) back in the queue, and re-sends wake-ups
nobody answered.

The database is the source of truth and the queue of record; the broker only carries wake-ups, and a
woken worker claims whichever run is fairest, so re-sent wake-ups are fair too. A wiped broker or a
killed worker delays a run by at most one sweep interval plus the lease time, never loses it.
Duplicate wake-ups are harmless: a wake-up with nothing to claim costs one empty claim.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta

from runner.webhooks import deliver_due
from tenants.approvals.service import expire_due
from tenants.budgets.service import release_expired
from tenants.kit import metrics
from tenants.kit.db import dispatch_after_commit, unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.logging import get_logger
from tenants.kit.settings import Settings
from tenants.reliability.derive import derive_once
from tenants.runs.dispatch import dispatch_repository
from tenants.runs.service import EXECUTE_RUN, wake_grace
from tenants.secrets.service import due_for_rotation, retire_expired
from tenants.webhooks.service import emit

__all__ = ["run_sweeper", "sweep_once"]

log = get_logger("sweeper")
MAX_WAKEUPS_PER_SWEEP = 64


def sweep_once(settings: Settings) -> int:
    """One pass: recover expired leases, re-wake runnable runs nobody claimed in time, expire approvals."""
    now = utcnow()
    next_wake = now + max(wake_grace(), timedelta(seconds=settings.lease_seconds))
    with unit_of_work() as session:
        repo = dispatch_repository(session)
        recovered = repo.recover_expired(now, next_wake)
        stranded = recovered + repo.overdue(now, next_wake)
    if recovered:
        log.info("leases_recovered", runs=len(recovered))
    with unit_of_work() as session:
        expired = expire_due(session, now)  # wakes their runs after commit (on_timeout applies)
    if expired:
        log.info("approvals_expired", approvals=len(expired))
    # Workers keep claiming while runs are due, so a few wake-ups drain any number of runs.
    for run in stranded[:MAX_WAKEUPS_PER_SWEEP]:
        dispatch_after_commit(EXECUTE_RUN, {"tenant_id": run.tenant_id, "run_id": run.run_id})
    for run in recovered:
        metrics.lease_stolen(run.tenant_id)  # its owner vanished: the next claim takes the run over
    for tenant_id, count in Counter(run.tenant_id for run in stranded).items():
        metrics.sweeper_recovered(tenant_id, count)
    if stranded:
        log.info("sweeper_requeued", runs=len(stranded))
    return len(stranded)


MAINTENANCE_EVERY_S = 60.0


def maintain(now: datetime, announced: set[tuple[str, str, str]]) -> dict[str, int]:
    """Housekeeping the scheduler owns: release budget reservations of crashed workers,
    retire secret versions past their grace, and raise ``secret.rotation_due`` once a day per secret."""
    with unit_of_work() as session:
        released = release_expired(session, now=now)
        retired = retire_expired(session, now)
        due = 0
        for secret in due_for_rotation(session, now):
            mark = (secret.tenant_id, secret.name, now.date().isoformat())
            if mark in announced:
                continue
            announced.add(mark)
            due += 1
            emit(session, secret.tenant_id, "secret.rotation_due", {
                "secret": secret.name, "age_days": secret.age_days, "max_age_days": secret.max_age_days})
    return {"reservations_released": released.reservations,
            "secret_versions_retired": retired, "rotation_due": due}


def run_sweeper(settings: Settings, stop: threading.Event) -> None:
    """Sweep every ``sweep_interval_seconds`` until ``stop`` is set; database errors are logged and retried."""
    announced: set[tuple[str, str, str]] = set()
    last_maintenance = 0.0
    while not stop.wait(settings.sweep_interval_seconds):
        if time.monotonic() - last_maintenance >= MAINTENANCE_EVERY_S:
            last_maintenance = time.monotonic()
            try:
                done = maintain(utcnow(), announced)
                if any(done.values()):
                    log.info("maintenance", **done)
            except Exception:
                log.warning("maintenance_failed", exc_info=True)
        try:
            sweep_once(settings)
        except Exception:
            log.warning("sweep_failed", exc_info=True)
        try:  # the webhook outbox rides on the same loop (the scheduler process, and `midwatch up`'s thread)
            deliver_due(settings)
        except Exception:
            log.warning("webhook_delivery_failed", exc_info=True)
        try:  # the dashboard's read models, derived from the decision log a batch at a time
            with unit_of_work() as session:
                derive_once(session)
        except Exception:
            log.warning("read_model_derivation_failed", exc_info=True)
