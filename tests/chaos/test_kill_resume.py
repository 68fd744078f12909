"""kill -9 a worker at item ~347 of 500: a new worker resumes there and no side effect happens twice.

The side effect is an HTTP call to a recording upstream, counted there per idempotency key: a duplicate
call would show, where a table behind a unique constraint would absorb it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from runner.sandbox_upstream import FaultyUpstream, ok
from tests.chaos.conftest import (
    EFFECT_TOOL,
    assert_effects_once,
    free_port,
    paced_batch,
    put_effect_tool,
    wait_http,
    wait_progress,
)
from tests.conftest import Harness, Tenant

pytestmark = pytest.mark.chaos

ITEMS = 500
KILL_AT = 347
FAST_RECOVERY = {"MIDWATCH_LEASE_SECONDS": "2", "MIDWATCH_SWEEP_INTERVAL_SECONDS": "0.5"}


def _prepare(h: Harness, tenant: Tenant, up: FaultyUpstream) -> None:
    up.script("/effects/*", [ok({"sent": True})])
    put_effect_tool(h, tenant, up)
    h.put_agent(tenant, paced_batch("invoices", EFFECT_TOOL, up.netloc, 0.004, schema=True))


def _assert_exactly_once(up: FaultyUpstream, run_id: str) -> None:
    # one item runs at a time: at most the call in flight at the kill is re-sent, with the same key
    assert_effects_once(up, {f"mw-{run_id}-{i}-2" for i in range(ITEMS)}, resent_at_most=1)
    paths = sorted(int(r.path.rsplit("/", 1)[1]) for r in up.requests if r.path.startswith("/effects/"))
    assert sorted(set(paths)) == list(range(ITEMS)), "an item's effect carried the wrong arguments"


@pytest.mark.postgres
@pytest.mark.parametrize("broker", [pytest.param("redis", marks=pytest.mark.redis),
                                    pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def test_resumes_at_item_347_after_the_worker_is_killed(make_harness: Callable[..., Harness], broker: str,
                                                         upstream: FaultyUpstream, tmp_path: Path) -> None:
    h = make_harness(db="postgres", broker=broker, worker=None, extra=FAST_RECOVERY)
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    first = h.spawn("worker", "--threads", "2", log=tmp_path / "worker1.log")
    tenant = h.onboard()
    _prepare(h, tenant, upstream)
    run = h.submit(tenant, "invoices", {"items": [{"n": i} for i in range(ITEMS)]})

    at_kill = wait_progress(h, tenant, run["id"], KILL_AT)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    h.spawn("worker", "--threads", "2", log=tmp_path / "worker2.log")

    done = h.wait_run(tenant, run["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert done["items_done"] == ITEMS and done["items_failed"] == 0
    assert at_kill["items_done"] < ITEMS, "the worker was killed after the run had finished"
    _assert_exactly_once(upstream, run["id"])
    kinds = [e["kind"] for e in h.events(tenant, run["id"])]
    assert "run.resumed" in kinds, "the second worker did not resume the run"
    assert kinds.count("step.succeeded") == ITEMS * 3, "a checkpointed step ran (and was recorded) twice"


def test_resumes_after_midwatch_up_is_killed_on_the_embedded_default(make_harness: Callable[..., Harness],
                                                                      upstream: FaultyUpstream,
                                                                      tmp_path: Path) -> None:
    h = make_harness(db="sqlite", broker="stub", worker=None, extra=FAST_RECOVERY)
    port = free_port()
    args = ("up", "--port", str(port), "--no-dashboard")
    first = h.spawn(*args, log=tmp_path / "up1.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz")
    h.client = httpx.Client(base_url=base, timeout=30)
    tenant = h.onboard()
    _prepare(h, tenant, upstream)
    run = h.submit(tenant, "invoices", {"items": [{"n": i} for i in range(ITEMS)]})

    wait_progress(h, tenant, run["id"], KILL_AT)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    h.spawn(*args, log=tmp_path / "up2.log")
    wait_http(base + "/healthz")

    done = h.wait_run(tenant, run["id"], timeout=120)
    assert done["state"] == "succeeded", done
    _assert_exactly_once(upstream, run["id"])
    assert "run.resumed" in [e["kind"] for e in h.events(tenant, run["id"])]
