"""The runner's Dramatiq actors. Other packages enqueue them by name (``execute_run``; ``run_rehearsal`` is
registered by :func:`runner.rehearsal.register_rehearsal_actor`).

A message is a wake-up: the worker that takes it claims the fairest runnable run (not necessarily the
one the message names; its ids only say who asked) and keeps claiming until none may run now.
"""

from __future__ import annotations

import dramatiq

from runner.broker import actor_options
from runner.engine._run import execute_next, work
from tenants.kit.settings import Settings
from tenants.runs.service import EXECUTE_RUN

__all__ = ["EXECUTE_RUN", "register_actors", "run_once"]


def register_actors(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare every actor on ``broker`` with explicit options (never Dramatiq's defaults)."""
    def _execute_run(tenant_id: str = "", run_id: str = "") -> None:
        del tenant_id, run_id  # a wake-up: the claim chooses the run fairly
        work(settings)

    decorate = dramatiq.actor(actor_name=EXECUTE_RUN, queue_name=settings.queue_name, broker=broker,
                              **actor_options(settings))
    decorate(_execute_run)


def run_once(settings: Settings) -> bool:
    """Claim the fairest runnable run and work on it for one time slice in this thread (embedding, tests,
    benchmarks); False when nothing may run now."""
    return execute_next(settings)
