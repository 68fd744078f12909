"""The runner's Dramatiq actors. Other packages enqueue them by name (``execute_run``)."""

from __future__ import annotations

from typing import Any

import dramatiq

from runner.broker import ACTOR_OPTIONS
from tenants.kit.settings import Settings

__all__ = ["EXECUTE_RUN", "register_actors"]

EXECUTE_RUN = "execute_run"


def register_actors(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare every actor on ``broker`` with explicit options (never Dramatiq's defaults)."""
    from runner.engine._execute import execute_run

    def _execute_run(tenant_id: str, run_id: str) -> None:
        execute_run(settings, tenant_id, run_id)

    options: dict[str, Any] = {
        "max_retries": ACTOR_OPTIONS["max_retries"],
        "min_backoff": ACTOR_OPTIONS["min_backoff"],
        "max_backoff": ACTOR_OPTIONS["max_backoff"],
        "max_age": ACTOR_OPTIONS["max_age"],
        "time_limit": int(settings.actor_time_limit_s * 1000),
    }
    decorate = dramatiq.actor(actor_name=EXECUTE_RUN, queue_name=settings.queue_name, broker=broker, **options)
    decorate(_execute_run)
