"""Fair dispatch: one tenant's flood is never another tenant's outage, on every broker.

The database is the queue of record; broker messages are wake-ups, and a woken worker claims the fairest
runnable run (stride scheduling across tenants by weight; priority only within a tenant; caps exact).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import Harness, Tenant

ECHO = """\
apiVersion: midwatch/v1
name: {name}
scope: {{tools: [sandbox.echo]}}
steps:
  - {{id: a, tool: sandbox.echo, args: {{n: 1}}}}
  - {{id: b, tool: sandbox.echo, args: {{n: 2}}}}
"""



def _runs(h: Harness, tenant: Tenant, agent: str, n: int, priority: int = 3) -> list[str]:
    return [h.submit(tenant, agent, {"input": None, "priority": priority})["id"] for _ in range(n)]


def _started(tenant_id: str) -> dict[str, datetime]:
    from sqlalchemy import select

    from tenants.kit.db import unit_of_work
    from tenants.runs.models import StepCheckpoint

    with unit_of_work() as session:  # a run's first step: when it really started working
        rows = session.execute(select(StepCheckpoint.run_id, StepCheckpoint.created_at).where(
            StepCheckpoint.tenant_id == tenant_id, StepCheckpoint.item_index == 0,
            StepCheckpoint.step_index == 0)).all()
    return {str(r): at for r, at in rows}


def _level_schedules(*tenant_ids: str) -> None:
    """The same virtual time and slice estimate for each tenant, as if their warm-ups had cost the same: under
    load one warm-up slice could measure ten times another, and the tenant with the cheap one then rightly ran
    several runs first, which is not what a test of priorities is about."""
    from sqlalchemy import update

    from tenants.kit.db import unit_of_work
    from tenants.scheduling.models import TenantSchedule

    with unit_of_work() as session:
        session.execute(update(TenantSchedule).where(TenantSchedule.tenant_id.in_(tenant_ids))
                        .values(vtime=0.0, avg_slice_s=0.01))


def _flood_then_single(h: Harness, start_workers: Callable[[], None]) -> None:
    """A queues 120 runs with the workers stopped, B one; B's run starts while most of A's still wait."""
    a, b = h.onboard(), h.onboard()
    h.put_agent(a, ECHO.format(name="flood"))
    h.put_agent(b, ECHO.format(name="single"))
    flood = _runs(h, a, "flood", 120)
    (single,) = _runs(h, b, "single", 1)
    start_workers()
    assert h.wait_run(b, single, timeout=60)["state"] == "succeeded"
    a_started = _started(a.id)
    b_first = _started(b.id)[single]
    before_b = sum(1 for at in a_started.values() if at < b_first)
    assert before_b <= 24, f"{before_b} of A's 120 queued runs started before B's single run"
    for run_id in flood:
        assert h.wait_run(a, run_id, timeout=120)["state"] == "succeeded"


def test_on_the_embedded_default_a_flood_does_not_delay_another_tenant(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker=None, extra={"MIDWATCH_WORKER_THREADS": "2"})
    from midwatch.services import Services
    from tenants.kit.settings import get_settings

    def start() -> None:
        h.services = Services(get_settings())
        h.services.start_worker()

    _flood_then_single(h, start)


@pytest.mark.parametrize("broker", [pytest.param("redis", marks=pytest.mark.redis),
                                    pytest.param("amqp", marks=pytest.mark.rabbitmq)])
@pytest.mark.postgres
def test_with_a_real_worker_a_flood_does_not_delay_another_tenant(make_harness: Callable[..., Harness],
                                                                    broker: str, tmp_path: Any) -> None:
    h = make_harness(db="postgres", broker=broker, worker=None, extra={"MIDWATCH_WORKER_THREADS": "2"})
    _flood_then_single(h, lambda: h.spawn("worker", log=tmp_path / "worker.log") and None)


@pytest.mark.redis
@pytest.mark.postgres
def test_a_wiped_broker_loses_nothing_and_the_sweeper_wakes_runs_fairly(make_harness: Callable[..., Harness],
                                                                        tmp_path: Any) -> None:
    import redis

    h = make_harness(db="postgres", broker="redis", worker=None,
                     extra={"MIDWATCH_WORKER_THREADS": "2", "MIDWATCH_WAKE_GRACE_SECONDS": "1"})
    a, b = h.onboard(), h.onboard()
    h.put_agent(a, ECHO.format(name="flood"))
    h.put_agent(b, ECHO.format(name="single"))
    flood = _runs(h, a, "flood", 100)
    singles = _runs(h, b, "single", 3)
    client = redis.Redis.from_url(h.env["MIDWATCH_BROKER_URL"])
    wiped = list(client.scan_iter(f"{h.env['MIDWATCH_REDIS_NAMESPACE']}*"))
    assert wiped, "the wake-ups were never in Redis"
    client.delete(*wiped)
    h.spawn("worker", log=tmp_path / "worker.log")
    time.sleep(2)
    assert all(h.run(b, r)["state"] == "queued" for r in singles), "a wake-up survived the wipe"
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    for run_id in singles:
        assert h.wait_run(b, run_id, timeout=60)["state"] == "succeeded"
    a_started, b_started = _started(a.id), _started(b.id)
    last_b = max(b_started.values())
    assert sum(1 for at in a_started.values() if at < last_b) <= 30, "the sweeper's wake-ups favoured the flood"
    for run_id in flood:
        assert h.wait_run(a, run_id, timeout=120)["state"] == "succeeded"


def test_priority_orders_runs_within_a_tenant_and_never_across(make_harness: Callable[..., Harness]) -> None:
    """A marks every run most urgent; B's ordinary runs still get their turns (priority never crosses
    tenants), and within A the one ordinary run waits for A's urgent ones."""
    from midwatch.services import Services
    from tenants.kit.settings import get_settings

    h = make_harness(worker=None, extra={"MIDWATCH_WORKER_THREADS": "1"})
    a, b = h.onboard(), h.onboard()
    h.put_agent(a, ECHO.format(name="jobs"))
    h.put_agent(b, ECHO.format(name="jobs"))
    h.services = Services(get_settings())
    h.services.start_worker(threads=1)
    for tenant in (a, b):  # warm each tenant up (first-run costs would count against its share of time)
        (warm,) = _runs(h, tenant, "jobs", 1)
        h.wait_run(tenant, warm)
    h.services.stop()
    _level_schedules(a.id, b.id)
    a_ordinary = _runs(h, a, "jobs", 1, priority=3)
    a_urgent = _runs(h, a, "jobs", 6, priority=1)
    b_ordinary = _runs(h, b, "jobs", 6, priority=5)
    h.services = Services(get_settings())
    h.services.start_worker(threads=1)
    for run_id in [*a_urgent, *a_ordinary]:
        h.wait_run(a, run_id, timeout=60)
    for run_id in b_ordinary:
        h.wait_run(b, run_id, timeout=60)
    a_started, b_started = _started(a.id), _started(b.id)
    assert a_started[a_ordinary[0]] > max(a_started[r] for r in a_urgent), "priority did not order A's own runs"
    a_times = sorted(a_started[r] for r in a_urgent)
    b_times = sorted(b_started[r] for r in b_ordinary)
    # one worker thread shared fairly: B's first run comes early (before A's fourth: the slices' measured costs
    # still jitter under load), and B is not left for last;
    # were priority to cross tenants, all six of A's urgent runs would come first
    assert b_times[0] < a_times[3], (a_times, b_times)
    assert sum(1 for t in b_times if t < a_times[-1]) >= 3, (a_times, b_times)


NAPPER = """\
apiVersion: midwatch/v1
name: {name}
scope: {{tools: [nap.wait], egress: ["127.0.0.1:{port}"]}}
steps:
  - {{id: nap, tool: nap.wait, args: {{who: {who}}}}}
"""


def _in_flight(upstream: Any, prefix: str, seconds: float) -> int:
    """The most requests under ``prefix`` the upstream was answering at once (each takes ``seconds``)."""
    starts = [r.at for r in upstream.requests if r.path.startswith(prefix)]
    points = sorted([(t, 1) for t in starts] + [(t + seconds, -1) for t in starts], key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


@pytest.mark.postgres
def test_caps_hold_exactly_under_200_concurrent_submissions_without_busy_redelivery(
        make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, upstream: Any) -> None:
    """Counted where the work happens: the upstream sees at most the cap of a tenant's (or an agent's) calls
    in flight at once, and sees the cap reached; each run is claimed once and wake-ups stay near one per run."""
    import runner.engine._run as engine
    from runner.sandbox_upstream import slow

    h = make_harness(db="postgres", worker=None, extra={"MIDWATCH_WORKER_THREADS": "8"})
    capped, per_agent = h.onboard(), h.onboard()
    port = upstream.url.rsplit(":", 1)[1]
    for tenant in (capped, per_agent):
        r = h.client.put("/v1/tools/nap.wait", headers=tenant.headers, json={
            "method": "GET", "url": f"{upstream.url}/nap/{{{{ args.who }}}}", "timeout_s": 10})
        assert r.status_code in (200, 201), r.text
        for agent in ("nap", "other"):
            h.put_agent(tenant, NAPPER.format(name=agent, port=port, who=f"{tenant.name}-{agent}"))
            upstream.script(f"/nap/{tenant.name}-{agent}", [slow(0.2, times=100)])
    limits = {capped.name: [{"metric": "concurrent_runs", "limit": 3}],
              per_agent.name: [{"metric": "concurrent_runs", "limit": 2, "agent": "nap"}]}
    for name, body in limits.items():
        r = h.client.put(f"/v1/admin/tenants/{name}/budgets", json=body, headers=h.op_headers)
        assert r.status_code == 200, r.text
    wakeups = [0]
    claims = [0]
    real_work, real_claim = engine.work, engine._claim

    def counting_work(settings: Any, budget_s: float = engine.WORK_BUDGET_S) -> int:
        wakeups[0] += 1
        return real_work(settings, budget_s)

    def counting_claim(settings: Any, conn: Any) -> Any:
        claimed = real_claim(settings, conn)
        claims[0] += claimed is not None
        return claimed

    monkeypatch.setattr(engine, "work", counting_work)
    monkeypatch.setattr(engine, "_claim", counting_claim)
    from midwatch.services import Services
    from tenants.kit.settings import get_settings

    h.services = Services(get_settings())
    h.services.start_worker()
    ids: dict[str, list[str]] = {capped.id: [], per_agent.id: []}
    lock = threading.Lock()

    def submit(tenant: Tenant, agent: str) -> None:
        run_id = h.submit(tenant, agent, {"input": None})["id"]
        with lock:
            ids[tenant.id].append(run_id)

    jobs = [(capped, "nap")] * 100 + [(per_agent, "nap")] * 80 + [(per_agent, "other")] * 20
    threads = [threading.Thread(target=submit, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tenant in (capped, per_agent):
        for run_id in ids[tenant.id]:
            assert h.wait_run(tenant, run_id, timeout=180)["state"] == "succeeded"
    assert _in_flight(upstream, f"/nap/{capped.name}-", 0.2) == 3  # the cap, never more, and it was used
    assert _in_flight(upstream, f"/nap/{per_agent.name}-nap", 0.2) <= 2
    assert len(upstream.requests) == 200  # every run called once
    # each run was claimed once (one slice each); wake-ups stayed near one per submission, no churn
    assert claims[0] == 200
    assert wakeups[0] <= 2 * claims[0], (wakeups[0], claims[0])
