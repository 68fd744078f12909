"""Concurrent-run slots: enforced in the database across workers, reclaimed from crashed holders,
and fair: one tenant's flood never starves another tenant's runs."""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import timedelta

from tenants.budgets.service import acquire_slot, release_expired, release_slot, renew_slot, slot_retry_delay_s
from tenants.kit.db import unit_of_work
from tests.conftest import Harness
from tests.tenants.budgets.conftest import at, limit, one_ledger, set_budget

NOW = at("2026-06-15T12:00:00+00:00")


def _acquire(tenant_id: str, run_id: str, now=NOW, ttl_s: float = 60) -> bool:  # type: ignore[no-untyped-def]
    with unit_of_work() as session:
        return acquire_slot(session, tenant_id, run_id, now=now, ttl_s=ttl_s)


def test_a_tenant_gets_at_most_its_limit_of_slots_and_a_released_slot_is_reusable(db: Harness) -> None:
    tenant = db.onboard()
    assert _acquire(tenant.id, "free")  # no limit configured: every run may start
    set_budget(tenant.id, limit("concurrent_runs", 2))
    assert _acquire(tenant.id, "r1") and _acquire(tenant.id, "r2")
    assert not _acquire(tenant.id, "r3")
    assert _acquire(tenant.id, "r1")  # already held: kept, not counted twice
    assert one_ledger(tenant.id, "concurrent_runs").reserved == 2
    slots = next(x for x in db.client.get("/v1/budgets", headers=tenant.headers).json()["limits"])
    assert (slots["metric"], slots["used"], slots["remaining"]) == ("concurrent_runs", "2", "0")
    with unit_of_work() as session:
        assert release_slot(session, tenant.id, "r1")
        assert not release_slot(session, tenant.id, "r1")
        assert not release_slot(session, tenant.id, "free")
    assert _acquire(tenant.id, "r3")
    assert one_ledger(tenant.id, "concurrent_runs").reserved == 2


def test_a_crashed_holders_slot_expires_and_is_reclaimed(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("concurrent_runs", 1))
    assert _acquire(tenant.id, "crashed", ttl_s=10)
    assert not _acquire(tenant.id, "waiting", now=NOW + timedelta(seconds=5))
    assert _acquire(tenant.id, "waiting", now=NOW + timedelta(seconds=11))  # reclaimed on demand
    with unit_of_work() as session:
        assert not renew_slot(session, tenant.id, "crashed", now=NOW + timedelta(seconds=12))
        assert release_expired(session, now=NOW + timedelta(seconds=200)).slots >= 1  # the scheduler's sweep
    assert one_ledger(tenant.id, "concurrent_runs").reserved == 0
    assert _acquire(tenant.id, "third", now=NOW + timedelta(seconds=201))


def test_one_tenants_flood_of_50_runs_does_not_starve_another_tenants_3_runs(db: Harness) -> None:
    """Tenant A submits 50 runs (concurrency limit 2), then tenant B submits 3 (limit 3). Four simulated
    workers take messages in FIFO order; a run without a slot goes back to the queue with a delay,
    as the engine does. B's runs must all start while most of A's flood is still waiting, and A
    must never run more than 2 at once."""
    a, b = db.onboard(), db.onboard()
    set_budget(a.id, limit("concurrent_runs", 2))
    set_budget(b.id, limit("concurrent_runs", 3))  # B stays within its own limit
    queue: deque[tuple[float, str, str, int]] = deque(
        [(0.0, a.id, f"a{i}", 0) for i in range(50)] + [(0.0, b.id, f"b{i}", 0) for i in range(3)])
    lock = threading.Lock()
    grants: list[str] = []
    running = {a.id: 0, b.id: 0}
    peak = {a.id: 0, b.id: 0}
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            with lock:
                if not queue:
                    return
                not_before, tenant_id, run_id, attempt = queue.popleft()
                if not_before > time.monotonic():
                    queue.append((not_before, tenant_id, run_id, attempt))
                    continue
            with unit_of_work() as session:
                granted = acquire_slot(session, tenant_id, run_id)
            if not granted:  # back to the queue with a delay (scaled down for the test)
                with lock:
                    queue.append((time.monotonic() + slot_retry_delay_s(attempt) / 10, tenant_id, run_id,
                                  attempt + 1))
                continue
            with lock:
                grants.append(run_id)
                running[tenant_id] += 1
                peak[tenant_id] = max(peak[tenant_id], running[tenant_id])
                if sum(g.startswith("b") for g in grants) == 3:
                    done.set()  # what we measure is known once B's runs have all started
            time.sleep(0.05)  # the run's time slice
            with lock:
                running[tenant_id] -= 1
            with unit_of_work() as session:
                release_slot(session, tenant_id, run_id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert done.is_set(), f"B's runs never all started: {grants}"
    assert peak[a.id] <= 2, peak
    last_b = max(grants.index(f"b{i}") for i in range(3))
    # Without the slot limit, FIFO would start B only after all 50 of A's runs (grants 51-53).
    assert last_b < 25, f"B's runs started only after {last_b} grants: {grants[:25]}"
    # every slot handed out was given back
    assert one_ledger(a.id, "concurrent_runs").reserved == one_ledger(b.id, "concurrent_runs").reserved == 0
