"""Recovery from lost broker messages, a PostgreSQL restart, a paused (zombie) worker and a poison run."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok
from tests.chaos.conftest import (
    EFFECT_TOOL,
    PrivatePostgres,
    assert_effects_once,
    paced_batch,
    put_effect_tool,
    wait_progress,
)
from tests.conftest import AMQP_URL, Harness, Tenant, batch_spec

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]
FAST = {"MIDWATCH_LEASE_SECONDS": "1", "MIDWATCH_SWEEP_INTERVAL_SECONDS": "0.3",
        "MIDWATCH_WAKE_GRACE_SECONDS": "1"}

SLOW_STEP = """\
apiVersion: midwatch/v1
name: slow
scope: {tools: [sandbox.sleep, %(tool)s], egress: ["%(egress)s"]}
steps:
  - id: think
    tool: sandbox.sleep
    args: {seconds: %(seconds)s}
  - id: send
    tool: %(tool)s
    args: {n: 0}
"""


def _slow_step(h: Harness, tenant: Tenant, up: FaultyUpstream, seconds: float) -> None:
    up.script("/effects/*", [ok({"sent": True})])
    put_effect_tool(h, tenant, up)
    h.put_agent(tenant, SLOW_STEP % {"tool": EFFECT_TOOL, "egress": up.netloc, "seconds": seconds})


@pytest.mark.parametrize("broker", [pytest.param("redis", marks=pytest.mark.redis),
                                    pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def test_wiping_the_broker_delays_runs_but_loses_none(make_harness: Callable[..., Harness], broker: str,
                                                      tmp_path: Path) -> None:
    h = make_harness(db="postgres", broker=broker, worker=None, extra=FAST)
    tenant = h.onboard()
    h.put_agent(tenant, batch_spec())
    runs = [h.submit(tenant, "batcher", {"items": [{"n": i} for i in range(5)]}) for _ in range(3)]
    if broker == "redis":
        import redis

        client = redis.Redis.from_url(h.env["MIDWATCH_BROKER_URL"])
        wiped = [k for k in client.scan_iter(f"{h.env['MIDWATCH_REDIS_NAMESPACE']}*")]
        assert wiped, "the wake-up messages were never in Redis"
        client.delete(*wiped)
    else:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        purged = conn.channel().queue_purge(h.env["MIDWATCH_QUEUE_NAME"]).method.message_count
        conn.close()
        assert purged == 3, purged
    h.spawn("worker", log=tmp_path / "worker.log")
    time.sleep(2)
    assert all(h.run(tenant, r["id"])["state"] == "queued" for r in runs), "messages survived the wipe"
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    for r in runs:
        assert h.wait_run(tenant, r["id"], timeout=60)["state"] == "succeeded"


@pytest.mark.redis
def test_a_postgresql_restart_mid_run_is_survived(make_harness: Callable[..., Harness], upstream: FaultyUpstream,
                                                   private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    upstream.script("/effects/*", [ok({"sent": True})])
    h = make_harness(db="postgres", broker="redis", worker=None,
                     extra={"MIDWATCH_LEASE_SECONDS": "10", "MIDWATCH_DATABASE_URL": private_postgres.url})
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    worker = h.spawn("worker", "--threads", "2", log=tmp_path / "worker.log")
    tenant = h.onboard()
    put_effect_tool(h, tenant, upstream)
    h.put_agent(tenant, paced_batch("paced", EFFECT_TOOL, upstream.netloc, 0.01))
    run = h.submit(tenant, "paced", {"items": [{"n": i} for i in range(300)]})
    wait_progress(h, tenant, run["id"], 60)
    private_postgres.restart()  # the test's own server: other tests' databases stay up
    done = h.wait_run(tenant, run["id"], timeout=180)
    assert done["state"] == "succeeded" and done["items_done"] == 300, done
    assert worker.poll() is None, "the worker crashed instead of backing off"
    # a call whose checkpoint the restart cut off is re-sent with its key; at most the two in flight (2 threads)
    assert_effects_once(upstream, {f"mw-{run['id']}-{i}-2" for i in range(300)}, resent_at_most=2)
    assert "database_unavailable_backing_off" in (tmp_path / "worker.log").read_text()


@pytest.mark.redis
def test_a_paused_worker_that_wakes_up_cannot_overwrite_the_new_owner(make_harness: Callable[..., Harness],
                                                                       upstream: FaultyUpstream,
                                                                       tmp_path: Path) -> None:
    from tenants.kit.db import unit_of_work
    from tenants.runs.repository import RunRepository

    h = make_harness(db="postgres", broker="redis", worker=None, extra=FAST)
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    zombie = h.spawn("worker", log=tmp_path / "zombie.log")
    tenant = h.onboard()
    _slow_step(h, tenant, upstream, 3)
    run = h.submit(tenant, "slow", {"input": None})
    h.wait_for(lambda: h.run(tenant, run["id"])["state"] == "running", timeout=30, what="the zombie to start")
    time.sleep(0.5)
    os.kill(zombie.pid, signal.SIGSTOP)  # paused mid-step: a GC pause, a partition
    try:
        h.spawn("worker", log=tmp_path / "owner.log")
        done = h.wait_run(tenant, run["id"], timeout=60)
        assert done["state"] == "succeeded", done
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    h.wait_for(lambda: "lease_lost" in (tmp_path / "zombie.log").read_text(), timeout=30,
               what="the zombie to notice it lost the lease")
    with unit_of_work() as session:
        repo = RunRepository(session, tenant.id)
        checkpoints = repo.checkpoints(run["id"], 0)
        fences = {cp.fence for cp in checkpoints}
        final = repo.get(run["id"])
        assert final is not None
    # the zombie held fence 1; the sweeper fenced it off when its lease expired, the new owner claimed after
    assert len(checkpoints) == 2 and fences == {final.fence} and final.fence > 1, \
        f"a stale owner wrote checkpoints: {fences} (the run's fence is {final.fence})"
    events = h.events(tenant, run["id"])
    assert [e["kind"] for e in events].count("step.succeeded") == 2
    assert h.client.get(f"/v1/runs/{run['id']}/events/verify", headers=tenant.headers).json()["ok"] is True
    # the zombie woke up mid-"think" and lost its lease: it must not send the effect as well
    time.sleep(1)
    assert_effects_once(upstream, {f"mw-{run['id']}-0-1"}, resent_at_most=0)


def _held_by(tenant: Tenant, run_id: str, pid: int) -> bool:
    """Whether the worker process ``pid`` holds the run's lease (owner ``host:pid:thread``)."""
    from tenants.kit.db import unit_of_work
    from tenants.runs.repository import RunRepository

    with unit_of_work() as session:
        run = RunRepository(session, tenant.id).get(run_id)
        return run is not None and f":{pid}:" in (run.lease_owner or "")


@pytest.mark.redis
def test_a_run_that_keeps_killing_its_worker_is_failed_not_looped(make_harness: Callable[..., Harness],
                                                                  upstream: FaultyUpstream, tmp_path: Path) -> None:
    h = make_harness(db="postgres", broker="redis", worker=None,
                     extra={**FAST, "MIDWATCH_MAX_REDELIVERIES": "2"})
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    tenant = h.onboard()
    _slow_step(h, tenant, upstream, 60)
    run = h.submit(tenant, "slow", {"input": None})
    for attempt in range(3):
        worker = h.spawn("worker", log=tmp_path / f"worker{attempt}.log")
        h.wait_for(lambda w=worker: _held_by(tenant, run["id"], w.pid), timeout=30,
                   what=f"delivery {attempt + 1}")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    h.spawn("worker", log=tmp_path / "last.log")
    done = h.wait_run(tenant, run["id"], timeout=60)
    assert done["state"] == "failed" and done["reason"].startswith("redelivery_exhausted"), done
    assert done["failure_category"] == "internal"
    assert upstream.requests_to("/effects/0") == [], "a run killed before its side effect still sent it"
