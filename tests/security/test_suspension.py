"""A suspended tenant executes nothing: its running runs stop at the next step boundary (state ``suspended``,
with the reason), its queued runs do not start, no side effect reaches an upstream while it is suspended, and
resuming continues every run exactly where it stopped — no step repeated, no checkpoint missing, the decision
log one continuous chain. Side effects are counted at the upstream that received them, on the embedded
default and on PostgreSQL + Redis with a real worker process and scheduler."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok, rate_limit, slow
from tests.chaos.conftest import assert_effects_once, effects_by_key, mailer_spec, put_effect_tool
from tests.conftest import Harness, Tenant

REASON = "tenant suspended by the operator"
QUIET_S = 2.0  # longer than a lease (1 s here), several sweeps and wake graces: anything that would restart does


def _harness(make_harness: Callable[..., Harness], where: str, tmp_path: Path) -> Harness:
    fast = {"MIDWATCH_LEASE_SECONDS": "1", "MIDWATCH_SWEEP_INTERVAL_SECONDS": "0.2",
            "MIDWATCH_WAKE_GRACE_SECONDS": "0.5"}
    if where == "embedded":
        h = make_harness(extra=fast)
        h.services.start_sweeper()
        return h
    h = make_harness(db="postgres", broker="redis", worker=None, extra=fast)
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    h.spawn("worker", "--threads", "2", log=tmp_path / "worker.log")
    return h


def _set_status(h: Harness, tenant: Tenant, action: str) -> None:
    r = h.client.post(f"/v1/admin/tenants/{tenant.name}/{action}", headers=h.op_headers)
    assert r.status_code in (200, 201), r.text


def _run(h: Harness, tenant: Tenant, run_id: str) -> dict[str, Any]:
    """The run as the API shows it (the tenant's keys are refused while suspended: read it as the operator
    would, through the database)."""
    from tenants.kit.db import read_only
    from tenants.runs.repository import RunRepository

    with read_only() as session:
        run = RunRepository(session, tenant.id).get(run_id)
        assert run is not None
        return {"state": run.state, "reason": run.reason, "items_done": run.items_done, "event_seq": run.event_seq}


def _wait(h: Harness, tenant: Tenant, run_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = _run(h, tenant, run_id)
        if run["state"] == state:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is {run} after {timeout}s, not {state}")
        time.sleep(0.02)


def _assert_continuous(h: Harness, tenant: Tenant, run_id: str, items: int) -> list[dict[str, Any]]:
    """Every (item, step) succeeded exactly once, the chain is intact and its seqs have no gap."""
    events = h.events(tenant, run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    verdict = h.client.get(f"/v1/runs/{run_id}/events/verify", headers=tenant.headers).json()
    assert verdict["ok"], verdict
    done = Counter((e["item_index"], e["step_id"]) for e in events if e["kind"] == "step.succeeded")
    expected = {(i, s) for i in range(items) for s in ("read", "send")}
    assert set(done) == expected, f"missing {sorted(expected - set(done))[:5]}"
    assert all(n == 1 for n in done.values()), {k: n for k, n in done.items() if n > 1}
    from tenants.kit.db import read_only
    from tenants.runs.repository import RunRepository

    with read_only() as session:
        positions = [(c.item_index, c.step_index)
                     for c in RunRepository(session, tenant.id).checkpoints_between(run_id, 0, items)]
    assert sorted(positions) == sorted(
        (i, s) for i in range(items) for s in (0, 1))
    return events


@pytest.mark.parametrize("where", ["embedded", pytest.param("postgres", marks=[pytest.mark.postgres,
                                                                             pytest.mark.redis])])
def test_suspension_stops_running_and_queued_runs_and_resume_continues_where_each_stopped(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path, where: str) -> None:
    upstream.script("/effects/*", [slow(0.05, ok({"sent": True}))])
    h = _harness(make_harness, where, tmp_path)
    tenant = h.onboard()
    # one run at a time, so the second run is still queued when the tenant is suspended
    r = h.client.put(f"/v1/admin/tenants/{tenant.name}/budgets", headers=h.op_headers,
                     json=[{"metric": "concurrent_runs", "limit": 1}])
    assert r.status_code == 200, r.text
    put_effect_tool(h, tenant, upstream)
    h.put_agent(tenant, mailer_spec(upstream))
    first = h.submit(tenant, "mailer", {"items": [{"n": i} for i in range(40)]})
    h.wait_for(lambda: _run(h, tenant, first["id"])["items_done"] >= 5, timeout=60, what="five items done")
    second = h.submit(tenant, "mailer", {"items": [{"n": 100 + i} for i in range(3)]})
    assert _run(h, tenant, second["id"])["state"] == "queued"

    _set_status(h, tenant, "suspend")
    assert _run(h, tenant, second["id"])["state"] == "suspended", "a queued run left the queue at once"
    stopped = _wait(h, tenant, first["id"], "suspended", timeout=30)
    assert stopped["reason"] == REASON
    assert 5 <= stopped["items_done"] < 40, stopped
    sent = sum(effects_by_key(upstream).values())
    seq = stopped["event_seq"]
    time.sleep(QUIET_S)

    assert sum(effects_by_key(upstream).values()) == sent, "a side effect reached the upstream while suspended"
    for run_id in (first["id"], second["id"]):
        now = _run(h, tenant, run_id)
        assert now["state"] == "suspended" and now["reason"] == REASON, now
    assert _run(h, tenant, first["id"])["event_seq"] == seq, "the suspended run kept writing"
    assert _run(h, tenant, second["id"])["event_seq"] == 0, "the queued run started"
    assert not any(k.startswith(f"mw-{second['id']}-") for k in effects_by_key(upstream))

    _set_status(h, tenant, "resume")
    for run_id in (first["id"], second["id"]):
        done = h.wait_run(tenant, run_id, timeout=90)
        assert done["state"] == "succeeded", done
    assert_effects_once(upstream, {f"mw-{first['id']}-{i}-1" for i in range(40)}
                        | {f"mw-{second['id']}-{i}-1" for i in range(3)})
    events = _assert_continuous(h, tenant, first["id"], 40)
    kinds = [e["kind"] for e in events]
    assert kinds.count("run.suspended") == 1
    suspended_at = kinds.index("run.suspended")
    assert kinds[suspended_at + 1] == "run.resumed", kinds[suspended_at - 2:suspended_at + 3]
    suspended = events[suspended_at]
    assert "suspended" in suspended["why"]
    _assert_continuous(h, tenant, second["id"], 3)


def test_a_run_waiting_out_a_backoff_is_suspended_too_and_resumes_its_attempt(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path) -> None:
    """A run that released its worker for a long backoff (Retry-After) is not leased when the tenant is
    suspended: it is taken out of the queue as well, and retries only after the resumption."""
    upstream.script("/effects/*", [ok({"sent": True})])
    upstream.script("/effects/2", [rate_limit("6"), ok({"sent": True})])
    h = _harness(make_harness, "embedded", tmp_path)
    tenant = h.onboard()
    put_effect_tool(h, tenant, upstream)
    h.put_agent(tenant, mailer_spec(upstream))
    run = h.submit(tenant, "mailer", {"items": [{"n": i} for i in range(4)]})
    h.wait_for(lambda: any(e["kind"] == "step.deferred" for e in h.events(tenant, run["id"])), timeout=30,
               what="the deferred attempt")

    _set_status(h, tenant, "suspend")
    held = _wait(h, tenant, run["id"], "suspended", timeout=10)
    assert held["reason"] == REASON
    time.sleep(7)  # the backoff ends while suspended: still nothing is sent
    assert len(upstream.requests_to("/effects/2")) == 1
    assert _run(h, tenant, run["id"])["state"] == "suspended"

    _set_status(h, tenant, "resume")
    assert h.wait_run(tenant, run["id"], timeout=60)["state"] == "succeeded"
    assert len(upstream.requests_to("/effects/2")) == 2  # the 429, then the retry after the resumption
    assert_effects_once(upstream, {f"mw-{run['id']}-{i}-1" for i in range(4)}, resent_at_most=1)
    _assert_continuous(h, tenant, run["id"], 4)


def test_an_approval_decided_while_suspended_waits_for_the_resumption(make_harness: Callable[..., Harness],
                                                                      upstream: FaultyUpstream,
                                                                      tmp_path: Path) -> None:
    """Waking a run on a decision must not put a suspended tenant's run back in the queue."""
    h = _harness(make_harness, "embedded", tmp_path)
    tenant = h.onboard()
    put_effect_tool(h, tenant, upstream)
    spec = mailer_spec(upstream).replace("input: {items: true}\n", """\
input: {items: true}
autonomy:
  approvals:
    - when: "step.tool == 'mail.send'"
      route: tenant-admin
""")
    h.put_agent(tenant, spec)
    run = h.submit(tenant, "mailer", {"items": [{"n": 1}]})
    h.wait_run(tenant, run["id"], states=("waiting_approval",), timeout=30)
    approval = h.client.get(f"/v1/approvals?run_id={run['id']}", headers=tenant.headers).json()["data"][0]

    _set_status(h, tenant, "suspend")
    from tenants.approvals.service import decide
    from tenants.kit.db import unit_of_work

    with unit_of_work() as session:  # the tenant's keys are refused now; a decision already in flight lands
        decide(session, tenant.id, approval["id"], approve=True, role="tenant-admin", key_id="key_test",
               comment=None)
    held = _wait(h, tenant, run["id"], "suspended", timeout=5)
    assert held["reason"] == REASON
    time.sleep(QUIET_S)
    assert upstream.requests_to("/effects/1") == []
    _set_status(h, tenant, "resume")
    assert h.wait_run(tenant, run["id"], timeout=60)["state"] == "succeeded"
    assert len(upstream.requests_to("/effects/1")) == 1


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_dead_workers_run_of_a_suspended_tenant_is_parked_not_requeued(make_harness: Callable[..., Harness],
                                                                         db: str) -> None:
    """The sweeper recovers a run whose worker died after the suspension: it is parked, and the resumption
    puts it back in the queue."""
    from datetime import timedelta

    from sqlalchemy import update

    from tenants.kit.db import unit_of_work
    from tenants.kit.ids import utcnow
    from tenants.runs.dispatch import dispatch_repository
    from tenants.runs.models import Run

    h = make_harness(db=db, worker=None)
    if db == "postgres":  # the session's schema holds earlier tests' runs; this test needs the queue to itself
        with unit_of_work() as session:
            session.execute(update(Run).where(Run.state.in_(("queued", "running"))).values(
                state="cancelled", lease_owner=None, lease_until=None, runnable_at=None, wake_at=None))
    tenant = h.onboard()
    h.put_agent(tenant, """\
apiVersion: midwatch/v1
name: echo
scope: {tools: [sandbox.echo]}
steps:
  - {id: a, tool: sandbox.echo, args: {x: 1}}
""")
    run = h.submit(tenant, "echo", {"input": {}})
    past = utcnow() - timedelta(seconds=30)
    with unit_of_work() as session:  # a worker claimed it, then died
        session.execute(update(Run).where(Run.id == run["id"]).values(
            state="running", lease_owner="dead-worker", lease_until=past, runnable_at=None, wake_at=None))
    _set_status(h, tenant, "suspend")
    with unit_of_work() as session:
        woken = dispatch_repository(session).recover_expired(utcnow(), utcnow())
    assert [w.run_id for w in woken] == [run["id"]]
    parked = _run(h, tenant, run["id"])
    assert parked["state"] == "suspended" and parked["reason"] == REASON, parked
    with unit_of_work() as session:
        assert dispatch_repository(session).claim("w", utcnow(), 5) is None

    _set_status(h, tenant, "resume")
    assert _run(h, tenant, run["id"])["state"] == "queued"
    with unit_of_work() as session:
        claimed = dispatch_repository(session).claim("w", utcnow(), 5)
        assert claimed is not None and claimed.id == run["id"]
