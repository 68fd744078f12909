"""Keeps the leases of runs this process is executing alive while a long step runs."""

from __future__ import annotations

import threading
from datetime import timedelta

from tenants.budgets.service import renew_slot
from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.logging import get_logger
from tenants.runs.repository import PlatformRunRepository

__all__ = ["LeaseKeeper"]

log = get_logger("lease")


class LeaseKeeper:
    """One daemon thread per process renewing every registered (run, fence) each ``lease_s / 3``."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._held: dict[str, int] = {}
        self._tenants: dict[str, str] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def hold(self, run_id: str, fence: int, tenant_id: str | None = None) -> None:
        with self._lock:
            self._held[run_id] = fence
            if tenant_id:
                self._tenants[run_id] = tenant_id
            self._lost.discard(run_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="midwatch-lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)
            self._tenants.pop(run_id, None)

    def lost(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._lost

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                until = utcnow() + timedelta(seconds=self.lease_s)
                with unit_of_work() as session:
                    lost = PlatformRunRepository(session).renew_leases(held, until)
                    for run_id in held:
                        tenant_id = self._tenants.get(run_id)
                        if tenant_id and run_id not in lost:
                            renew_slot(session, tenant_id, run_id, ttl_s=300.0)
                with self._lock:
                    self._lost.update(lost)
            except Exception:
                log.warning("lease_renewal_failed", exc_info=True)
