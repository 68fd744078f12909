"""Keeps the leases of runs this process is executing alive while a long step runs."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.logging import get_logger
from tenants.runs.repository import PlatformRunRepository

__all__ = ["LeaseKeeper", "keeper"]

log = get_logger("lease")


class LeaseKeeper:
    """One daemon thread per process renewing every held (run, fence) each ``lease_s / 3`` seconds."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[int, float]] = {}  # run id -> (fence, lease seconds)
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, run_id: str, fence: int, lease_s: float) -> None:
        with self._lock:
            self._held[run_id] = (fence, lease_s)
            self._lost.discard(run_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="midwatch-lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)
            self._lost.discard(run_id)

    def lost(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._lost

    def _interval(self) -> float:
        with self._lock:
            return min((lease for _, lease in self._held.values()), default=3.0) / 3

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval())
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                now = utcnow()
                with unit_of_work() as session:
                    lost = PlatformRunRepository(session).renew_leases(
                        {run: fence for run, (fence, _) in held.items()},
                        {run: now + timedelta(seconds=lease) for run, (_, lease) in held.items()})
                with self._lock:
                    self._lost.update(lost)
            except Exception:
                log.warning("lease_renewal_failed", exc_info=True)


keeper = LeaseKeeper()
