"""A process's heartbeat: a row in ``worker_heartbeats`` refreshed every ``MIDWATCH_HEARTBEAT_SECONDS``.

``midwatch status``, the ``midwatch_workers_alive`` gauge and the "no worker heartbeat" alert read these
rows; a worker whose row is older than three intervals is dead (or cut off from the database, which for a
worker is the same). A clean stop deletes the row, so only crashes leave stale ones (pruned after an hour).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time

from tenants.kit import metrics
from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.logging import get_logger
from tenants.kit.settings import Settings
from tenants.observability.service import Heartbeat, record_heartbeat, remove_heartbeat

__all__ = ["HeartbeatThread"]

log = get_logger("heartbeat")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("midwatch")
    except PackageNotFoundError:  # pragma: no cover - a bare source tree
        return "0"


class HeartbeatThread:
    """Publishes one process's heartbeat of ``kind`` (worker or scheduler) until :meth:`stop`."""

    def __init__(self, settings: Settings, kind: str, *, threads: int = 0, health_port: int | None = None) -> None:
        host = socket.gethostname()
        self.beat = Heartbeat(id=f"{kind}:{host}:{os.getpid()}:{secrets.token_hex(3)}", kind=kind, hostname=host,
                              pid=os.getpid(), version=_version(), started_at=utcnow(),
                              interval_s=settings.heartbeat_seconds, threads=threads, health_port=health_port)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._publish()  # the first beat before start() returns: `midwatch status` sees the process at once
        self._thread = threading.Thread(target=self._loop, name=f"midwatch-heartbeat-{self.beat.kind}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.beat.interval_s):
            self._publish()

    def _publish(self) -> None:
        try:
            with unit_of_work() as session:
                record_heartbeat(session, self.beat)
        except Exception as exc:  # the database is down: say so once, keep trying
            if not self._failing:
                log.warning("heartbeat_failed", kind=self.beat.kind, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat_recovered", kind=self.beat.kind)
        self._failing = False
        metrics.heartbeat(self.beat.kind, time.time())

    def stop(self) -> None:
        """Stop beating and delete the row (a clean stop is not a dead worker)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with unit_of_work() as session:
                remove_heartbeat(session, self.beat.id)
        except Exception:  # the row simply ages out
            log.debug("heartbeat_remove_failed", exc_info=True)
