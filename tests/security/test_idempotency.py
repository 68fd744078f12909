"""Idempotency-Key under real concurrency: 20 identical submissions at once create one run, run it once.

The API is served by a real uvicorn server (in a thread of this process, so it shares the harness's broker
and worker threads on both databases); its sync handlers run on uvicorn's thread pool, each with its own
database connection, so the 20 requests really race in the database. 20 clients released together by a
barrier send them over real HTTP connections.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import Harness, Tenant, batch_spec, free_port, simple_spec

CLIENTS = 20
ITEMS = [{"n": i} for i in range(5)]


@contextmanager
def _served(h: Harness) -> Iterator[str]:
    """A real uvicorn server for the harness's app; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(h.client.app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _race(base: str, tenant: Tenant, bodies: list[dict[str, Any]], key: str) -> list[httpx.Response]:
    """Send every body at the same moment, each from its own client and connection."""
    barrier = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=30) as client:
            barrier.wait()
            return client.post("/v1/agents/batcher/runs", json=body,
                               headers={**tenant.headers, "Idempotency-Key": key})

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


def _db_counts(tenant_id: str) -> tuple[int, int]:
    """Runs and run items of the tenant, straight from the database (the source of truth)."""
    from tenants.kit.db import unit_of_work
    from tenants.runs.models import Run, RunItem

    with unit_of_work() as session:
        runs = session.scalar(select(func.count()).select_from(Run).where(Run.tenant_id == tenant_id))
        items = session.scalar(select(func.count()).select_from(RunItem).where(RunItem.tenant_id == tenant_id))
    return int(runs or 0), int(items or 0)


DBS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("db", DBS)
def test_twenty_concurrent_identical_submissions_create_and_execute_one_run(
        make_harness: Callable[..., Harness], db: str) -> None:
    h = make_harness(db=db)
    tenant = h.onboard()
    h.put_agent(tenant, batch_spec())

    with _served(h) as base:
        responses = _race(base, tenant, [{"items": ITEMS}] * CLIENTS, key="invoice-batch-2026-11")

    assert all(r.status_code in (200, 201) for r in responses), [(r.status_code, r.text) for r in responses]
    assert Counter(r.status_code for r in responses) == {201: 1, 200: CLIENTS - 1}
    run_ids = {r.json()["id"] for r in responses}
    assert len(run_ids) == 1
    run_id = run_ids.pop()
    assert _db_counts(tenant.id) == (1, len(ITEMS))

    done = h.wait_run(tenant, run_id)
    assert done["state"] == "succeeded" and done["items_done"] == len(ITEMS)
    # executed once: one effect per item, each under the run's own idempotency key, one run.started
    records = h.client.get("/v1/sandbox/records", headers=tenant.headers).json()["data"]
    assert len(records) == len(ITEMS)
    assert {r["idempotency_key"] for r in records} == {f"mw-{run_id}-{i}-1" for i in range(len(ITEMS))}
    kinds = Counter(e["kind"] for e in h.events(tenant, run_id))
    assert kinds["run.started"] == 1 and kinds["run.succeeded"] == 1
    assert _db_counts(tenant.id) == (1, len(ITEMS))


@pytest.mark.parametrize("db", DBS)
def test_concurrent_submissions_of_two_bodies_under_one_key_make_one_run_and_conflicts(
        make_harness: Callable[..., Harness], db: str) -> None:
    h = make_harness(db=db, worker=None)
    tenant = h.onboard()
    h.put_agent(tenant, batch_spec())
    first, second = {"items": ITEMS}, {"items": ITEMS[:2]}

    with _served(h) as base:
        responses = _race(base, tenant, [first, second] * (CLIENTS // 2), key="same-key")

    by_status = Counter(r.status_code for r in responses)
    assert set(by_status) <= {200, 201, 409} and by_status[201] == 1, [(r.status_code, r.text) for r in responses]
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert all(r.json()["id"] == winner["id"] for r in responses if r.status_code == 200)
    conflicts = [r.json() for r in responses if r.status_code == 409]
    assert len(conflicts) == CLIENTS // 2
    assert all(c["code"] == "idempotency_conflict" and c["run_id"] == winner["id"] for c in conflicts)
    assert _db_counts(tenant.id) == (1, winner["items_total"])


def test_the_same_key_in_two_tenants_makes_two_runs_and_a_conflict_names_only_the_callers_own(
        harness: Harness) -> None:
    """The idempotency conflict names the existing run: only ever the caller's own."""
    a, b = harness.onboard(), harness.onboard()
    for tenant in (a, b):
        harness.put_agent(tenant, simple_spec())
    a_run = harness.submit(a, "greeter", {"input": {"customer": "a", "amount": 1}}, key="k")
    b_run = harness.submit(b, "greeter", {"input": {"customer": "a", "amount": 1}}, key="k")
    assert a_run["id"] != b_run["id"]
    r = harness.client.post("/v1/agents/greeter/runs", json={"input": {"customer": "z"}},
                            headers={**b.headers, "Idempotency-Key": "k"})
    assert r.status_code == 409 and r.json()["run_id"] == b_run["id"], r.text
