"""Start-up of each process kind: logging, database, broker, worker threads, sweeper."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from sqlalchemy import text

from runner.actors import register_actors
from runner.broker import broker_ready, init_broker
from runner.engine._registry import set_secret_lookup
from runner.engine._run import request_stop, stopping
from runner.sweeper import run_sweeper
from tenants.accounts.service import ensure_operator_key
from tenants.kit.db import unit_of_work
from tenants.kit.logging import configure_logging, get_logger
from tenants.kit.settings import Settings
from tenants.migrations import upgrade
from tenants.secrets.keyring_backend import get_secret, get_secret_for_retry, install_keyring
from tenants.secrets.master_key import get_master_key

__all__ = ["Services", "bootstrap", "database_ready", "process_ready"]

log = get_logger("midwatch")


def database_ready() -> None:
    """Raise if the database is unreachable."""
    with unit_of_work() as session:
        session.execute(text("SELECT 1"))


def process_ready() -> None:
    """Database and broker reachable."""
    database_ready()
    broker_ready()


def bootstrap(settings: Settings, *, migrate: bool) -> str | None:
    """Configure logging, (optionally) migrate, build the broker, load the secrets master key and select the
    Midwatch keyring, make sure an operator key exists.

    Returns a newly generated operator key (to print once), if one was generated.
    """
    configure_logging(settings.log_level, settings.log_format)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        upgrade()
    init_broker(settings, register_actors)
    get_master_key()  # fail fast on a bad or missing key; the embedded mode generates its key here, at first start
    install_keyring()  # tenant secrets are resolved only through the Midwatch keyring backend, selected explicitly
    set_secret_lookup(get_secret, get_secret_for_retry)
    supplied = settings.operator_key.get_secret_value() if settings.operator_key else None
    with unit_of_work() as session:
        return ensure_operator_key(session, supplied)


@dataclass
class Services:
    """Background machinery of a process: worker threads and the sweeper."""

    settings: Settings
    worker: Any = None
    sweeper_stop: threading.Event = field(default_factory=threading.Event)
    sweeper: threading.Thread | None = None

    def start_worker(self, threads: int | None = None) -> None:
        stopping.clear()
        broker = init_broker(self.settings, register_actors)
        self.worker = dramatiq.Worker(broker, queues={self.settings.queue_name},
                                      worker_threads=threads or self.settings.worker_threads, worker_timeout=100)
        self.worker.start()
        log.info("worker_started", threads=threads or self.settings.worker_threads, broker=type(broker).__name__)

    def start_sweeper(self) -> None:
        self.sweeper = threading.Thread(target=run_sweeper, args=(self.settings, self.sweeper_stop),
                                        name="midwatch-sweeper", daemon=True)
        self.sweeper.start()

    def stop(self) -> None:
        """Graceful: executions hand their runs back after the current step, then threads stop."""
        request_stop()
        self.sweeper_stop.set()
        if self.worker is not None:
            self.worker.stop(timeout=int(self.settings.shutdown_grace_s * 1000))
            self.worker = None
        if self.sweeper is not None:
            self.sweeper.join(timeout=5)
        log.info("stopped")
