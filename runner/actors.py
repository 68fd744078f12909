"""The runner's Dramatiq actors. Other packages enqueue them by name (``execute_run``, ``run_rehearsal``).

A message is a wake-up: the worker that takes it claims the fairest runnable run (not necessarily the
one the message names; its ids only say who asked) and keeps claiming until none may run now.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from runner.broker import ACTOR_OPTIONS
from tenants.kit.settings import Settings
from tenants.rehearsals.service import REHEARSE
from tenants.runs.service import EXECUTE_RUN

__all__ = ["EXECUTE_RUN", "REHEARSE", "register_actors", "run_once"]


def register_actors(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare every actor on ``broker`` with explicit options (never Dramatiq's defaults)."""
    from runner.engine._run import work

    def _execute_run(tenant_id: str = "", run_id: str = "") -> None:
        del tenant_id, run_id  # a wake-up: the claim chooses the run fairly
        work(settings)

    options: dict[str, Any] = {**ACTOR_OPTIONS, "time_limit": int(settings.actor_time_limit_s * 1000)}
    decorate = dramatiq.actor(actor_name=EXECUTE_RUN, queue_name=settings.queue_name, broker=broker, **options)
    decorate(_execute_run)

    def _run_rehearsal(tenant_id: str = "", rehearsal_id: str = "") -> None:
        from runner.rehearsal import run_requested

        run_requested(settings, tenant_id, rehearsal_id)

    # A rehearsal is carried out once: a failure is recorded on it (state error), never retried by the broker.
    dramatiq.actor(actor_name=REHEARSE, queue_name=settings.queue_name, broker=broker,
                   **{**options, "max_retries": 0})(_run_rehearsal)


def run_once(settings: Settings) -> bool:
    """Claim the fairest runnable run and work on it for one time slice in this thread (embedding, tests,
    benchmarks); False when nothing may run now."""
    from runner.engine._run import execute_next

    return execute_next(settings)
