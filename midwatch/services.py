"""Start-up of each process kind: logging, tracing, database, broker, worker threads, sweeper, heartbeats."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from sqlalchemy import text

from midwatch.heartbeat import HeartbeatThread
from runner.actors import register_actors
from runner.broker import broker_ready, init_broker
from runner.engine._registry import set_secret_lookup
from runner.engine._run import request_stop, send_handed_back, stopping
from runner.rehearsal import register_rehearsal_actor
from runner.sweeper import run_sweeper
from tenants.accounts.service import ensure_operator_key, open_platform_chain
from tenants.kit.db import unit_of_work
from tenants.kit.logging import configure_logging, get_logger
from tenants.kit.master_key import get_master_key
from tenants.kit.settings import Settings
from tenants.kit.tracing import configure_tracing
from tenants.secrets.keyring_backend import get_secret, get_secret_for_retry, install_keyring

__all__ = ["Services", "bootstrap", "database_ready", "process_ready"]

log = get_logger("midwatch")


def _register(broker: Any, settings: Settings) -> None:
    """Every actor this installation's processes serve: runs and API-requested rehearsals."""
    register_actors(broker, settings)
    register_rehearsal_actor(broker, settings)


def database_ready() -> None:
    """Raise if the database is unreachable."""
    with unit_of_work() as session:
        session.execute(text("SELECT 1"))


def process_ready() -> None:
    """Database and broker reachable."""
    database_ready()
    broker_ready()


def bootstrap(settings: Settings, *, migrate: bool, process: str = "embedded") -> str | None:
    """Configure logging and tracing (``process``: api, worker, scheduler, embedded), (optionally) migrate,
    build the broker, load the secrets master key and select the Midwatch keyring, make sure an operator key
    exists.

    Returns a newly generated operator key (to print once), if one was generated.
    """
    configure_logging(settings.log_level, settings.effective_log_format)
    if configure_tracing(settings, process):
        log.info("tracing_enabled", process=process)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        from tenants.migrations import upgrade  # Alembic only where migrations run: a worker starts faster

        upgrade()
    init_broker(settings, _register)
    get_master_key()  # fail fast on a bad or missing key; the embedded mode generates its key here, at first start
    install_keyring()  # tenant secrets are resolved only through the Midwatch keyring backend, selected explicitly
    set_secret_lookup(get_secret, get_secret_for_retry)
    supplied = settings.operator_key.get_secret_value() if settings.operator_key else None
    with unit_of_work() as session:
        open_platform_chain(session)  # a fresh installation: the platform audit chain starts sealed
        return ensure_operator_key(session, supplied)


@dataclass
class Services:
    """Background machinery of a process: worker threads and the sweeper, each publishing its heartbeat."""

    settings: Settings
    worker: Any = None
    sweeper_stop: threading.Event = field(default_factory=threading.Event)
    sweeper: threading.Thread | None = None
    heartbeats: list[HeartbeatThread] = field(default_factory=list)

    def start_worker(self, threads: int | None = None, *, health_port: int | None = None) -> None:
        """Start the worker threads and the ``worker`` heartbeat (``health_port``: where /metrics is served)."""
        stopping.clear()
        broker = init_broker(self.settings, _register)
        count = threads or self.settings.worker_threads
        self.worker = dramatiq.Worker(broker, queues={self.settings.queue_name}, worker_threads=count,
                                      worker_timeout=100)
        self.worker.start()
        self._beat("worker", threads=count, health_port=health_port)
        log.info("worker_started", threads=count, broker=type(broker).__name__)

    def start_sweeper(self, *, health_port: int | None = None) -> None:
        """Start the sweeper thread and the ``scheduler`` heartbeat."""
        self.sweeper = threading.Thread(target=run_sweeper, args=(self.settings, self.sweeper_stop),
                                        name="midwatch-sweeper", daemon=True)
        self.sweeper.start()
        self._beat("scheduler", health_port=health_port)

    def _beat(self, kind: str, *, threads: int = 0, health_port: int | None = None) -> None:
        heartbeat = HeartbeatThread(self.settings, kind, threads=threads, health_port=health_port)
        heartbeat.start()
        self.heartbeats.append(heartbeat)

    def stop(self) -> None:
        """Graceful: executions hand their runs back after the current step, then threads stop."""
        request_stop()
        self.sweeper_stop.set()
        if self.worker is not None:
            self.worker.stop(timeout=int(self.settings.shutdown_grace_s * 1000))
            self.worker = None
            send_handed_back()  # only now: this process's consumers can no longer take these wake-ups
        if self.sweeper is not None:
            self.sweeper.join(timeout=5)
        for heartbeat in self.heartbeats:
            heartbeat.stop()
        self.heartbeats.clear()
        log.info("stopped")
