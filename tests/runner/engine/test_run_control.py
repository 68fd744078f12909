"""Cancel stops between steps; resume continues from the last checkpoint on the pinned version; a checkpoint
that disagrees with the pinned spec stops the run with a clear error."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from runner.sandbox_upstream import FaultyUpstream, ok, status
from tests.conftest import Harness, Tenant

SLOW = """\
apiVersion: midwatch/v1
name: slow
scope: {tools: [sandbox.sleep, sandbox.record]}
input: {items: true}
steps:
  - {id: nap, tool: sandbox.sleep, args: {seconds: 0.15}}
  - {id: note, tool: sandbox.record, args: {n: "{{ item.n }}"}}
"""


def test_cancel_stops_a_running_batch_between_steps(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, SLOW)
    run = harness.submit(tenant, "slow", {"items": [{"n": i} for i in range(30)]})
    harness.wait_for(lambda: harness.run(tenant, run["id"])["items_done"] >= 2, timeout=30, what="progress")
    r = harness.client.post(f"/v1/runs/{run['id']}/cancel", headers=tenant.headers)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = harness.wait_run(tenant, run["id"], timeout=30)
    assert done["state"] == "cancelled" and done["items_done"] < 30, done
    events = harness.events(tenant, run["id"])
    assert events[-1]["kind"] == "run.cancelled"
    again = harness.client.post(f"/v1/runs/{run['id']}/cancel", headers=tenant.headers)
    assert again.status_code == 409


def test_cancel_of_a_queued_run_is_immediate(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker=None)
    tenant = h.onboard()
    h.put_agent(tenant, SLOW)
    run = h.submit(tenant, "slow", {"items": [{"n": 1}]})
    r = h.client.post(f"/v1/runs/{run['id']}/cancel", headers=tenant.headers)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"


def _flaky_spec(up: FaultyUpstream) -> str:
    return f"""\
apiVersion: midwatch/v1
name: flaky
scope: {{tools: [sandbox.record, crm.get], egress: ["{up.netloc}"]}}
steps:
  - {{id: first, tool: sandbox.record, args: {{step: 1}}}}
  - {{id: fetch, tool: crm.get, on_dependency_failure: escalate}}
  - {{id: last, tool: sandbox.record, args: {{step: 3}}}}
"""


def _flaky_run(harness: Harness, upstream: FaultyUpstream) -> tuple[Tenant, dict[str, Any]]:
    """A run of ``flaky`` whose middle step fails once (and escalates), then would succeed."""
    upstream.script("/crm", [status(500, {"error": "down"}), ok({"fine": True})])
    tenant = harness.onboard()
    harness.client.put("/v1/tools/crm.get", headers=tenant.headers,
                       json={"method": "GET", "url": f"{upstream.url}/crm", "retry": {"max_attempts": 1}})
    harness.put_agent(tenant, _flaky_spec(upstream))
    return tenant, harness.submit(tenant, "flaky", {"input": None})


def test_resume_continues_from_the_last_checkpoint(harness: Harness, upstream: FaultyUpstream) -> None:
    tenant, run = _flaky_run(harness, upstream)
    failed = harness.wait_run(tenant, run["id"])
    assert failed["state"] == "escalated", failed
    # the tenant publishes a new version meanwhile: the resumed run must keep its pinned version 1
    harness.put_agent(tenant, _flaky_spec(upstream).replace("step: 3", "step: 333"))
    r = harness.client.post(f"/v1/runs/{run['id']}/resume", headers=tenant.headers)
    assert r.status_code == 202 and r.json()["state"] == "queued"
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "succeeded" and done["agent_version"] == 1, done
    steps = Counter(e["step_id"] for e in harness.events(tenant, run["id"]) if e["kind"] == "step.succeeded")
    assert steps == {"first": 1, "fetch": 1, "last": 1}, "a checkpointed step ran again"
    records = harness.client.get("/v1/sandbox/records", headers=tenant.headers).json()["data"]
    assert [r["args"] for r in records] == [{"step": 1}, {"step": 3}]
    assert harness.client.post(f"/v1/runs/{run['id']}/resume", headers=tenant.headers).status_code == 409


def test_a_checkpoint_that_disagrees_with_the_pinned_spec_fails_clearly(harness: Harness,
                                                                         upstream: FaultyUpstream) -> None:
    from sqlalchemy import update

    from tenants.kit.db import unit_of_work
    from tenants.runs.models import StepCheckpoint

    tenant, run = _flaky_run(harness, upstream)
    assert harness.wait_run(tenant, run["id"])["state"] == "escalated"
    with unit_of_work() as session:
        session.execute(update(StepCheckpoint).where(StepCheckpoint.run_id == run["id"],
                                                     StepCheckpoint.step_index == 0).values(step_id="renamed"))
    harness.client.post(f"/v1/runs/{run['id']}/resume", headers=tenant.headers)
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "failed" and done["failure_category"] == "state", done
    assert "'renamed'" in done["reason"] and "'first'" in done["reason"]
