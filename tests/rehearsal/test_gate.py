"""The deploy gate and the asynchronous API: an agent that requires a rehearsal runs only versions that
passed one, and a rehearsal requested through the API is carried out by a worker and reported."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Harness, Tenant, batch_spec
from tests.rehearsal.conftest import FAST_PLATFORM


def _passed(h: Harness, tenant: Tenant, agent: str, version: int, profile: str = "realistic",
            verdict: str = "pass") -> str:
    """Store a finished rehearsal of ``version`` (what `midwatch rehearse` stores when it is done)."""
    from tenants.agents.service import get_version
    from tenants.kit.db import unit_of_work
    from tenants.rehearsals.service import Headline, begin_rehearsal, finish_rehearsal

    with unit_of_work() as session:
        stored = get_version(session, tenant.id, agent, version)
        row = begin_rehearsal(session, tenant.id, agent_name=agent, version=stored, source="agent",
                              spec_hash=stored.spec_hash, profile=profile, options=None, seed=1, items=20, repeat=3,
                              requested_by="test")
        finish_rehearsal(session, tenant.id, row.id, {"verdict": {"result": verdict}},
                         Headline(verdict, 1.0, 1.0, 0.95, None, 0, 4.0))
        return row.id


def _submit(h: Harness, tenant: Tenant, agent: str, version: int | None = None) -> Any:
    body: dict[str, Any] = {"items": [{"n": 1}]}
    if version is not None:
        body["version"] = version
    return h.client.post(f"/v1/agents/{agent}/runs", json=body, headers=tenant.headers)


def test_an_agent_that_requires_a_rehearsal_runs_only_versions_that_passed_one(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker=None)
    tenant = h.onboard()
    h.put_agent(tenant, batch_spec("payouts"))
    policy = h.client.put("/v1/agents/payouts/rehearsal-policy", json={"requires_rehearsal": True},
                          headers=tenant.headers)
    assert policy.status_code == 200 and policy.json()["min_profile"] == "realistic", policy.text

    refused = _submit(h, tenant, "payouts")
    assert refused.status_code == 409 and refused.json()["code"] == "rehearsal_required", refused.text
    assert "no version has one yet" in refused.json()["detail"]

    _passed(h, tenant, "payouts", 1)
    h.put_agent(tenant, batch_spec("payouts").replace("send", "deliver"))  # v2, not rehearsed
    default = _submit(h, tenant, "payouts")
    assert default.status_code == 201 and default.json()["agent_version"] == 1, default.text  # the newest that passed
    explicit = _submit(h, tenant, "payouts", version=2)
    assert explicit.status_code == 409 and explicit.json()["code"] == "rehearsal_required", explicit.text
    assert _submit(h, tenant, "payouts", version=1).status_code == 201

    _passed(h, tenant, "payouts", 2, profile="gentle")  # below the policy's min_profile: does not count
    _passed(h, tenant, "payouts", 2, profile="realistic", verdict="fail")  # a failed rehearsal does not count
    assert _submit(h, tenant, "payouts", version=2).status_code == 409
    h.client.put("/v1/agents/payouts/rehearsal-policy", json={"requires_rehearsal": True, "min_profile": "gentle"},
                 headers=tenant.headers)
    assert _submit(h, tenant, "payouts").json()["agent_version"] == 2

    h.client.put("/v1/agents/payouts/rehearsal-policy", json={"requires_rehearsal": False}, headers=tenant.headers)
    audit = h.client.get("/v1/audit?action=agent.rehearsal_policy_set", headers=tenant.headers).json()["data"]
    assert len(audit) == 3
    assert audit[-1]["details"]["after"] == {"requires_rehearsal": False, "min_profile": "realistic"}


def test_a_gate_belongs_to_its_tenant(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker=None)
    owner, other = h.onboard(), h.onboard()
    h.put_agent(owner, batch_spec("payouts"))
    h.put_agent(other, batch_spec("payouts"))
    h.client.put("/v1/agents/payouts/rehearsal-policy", json={"requires_rehearsal": True}, headers=owner.headers)
    assert _submit(h, other, "payouts").status_code == 201  # the other tenant's agent of the same name is ungated
    rehearsal = _passed(h, owner, "payouts", 1)
    assert h.client.get(f"/v1/rehearsals/{rehearsal}", headers=other.headers).status_code == 404
    bad = h.client.put("/v1/agents/payouts/rehearsal-policy", json={"requires_rehearsal": True, "min_profile": "x"},
                       headers=owner.headers)
    assert bad.status_code == 422


def test_a_rehearsal_requested_through_the_api_is_carried_out_by_a_worker_and_reported(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker="threads", extra=FAST_PLATFORM)
    tenant = h.onboard()
    approved = json.dumps({**json.loads(batch_spec("payouts")), "autonomy": {
        "approvals": [{"when": "step.tool == 'sandbox.record'", "route": "approver"}]}})
    h.put_agent(tenant, approved)  # every payout waits for a human: the rehearsal's scripted one answers
    h.client.put("/v1/agents/payouts/rehearsal-policy", json={"requires_rehearsal": True, "min_profile": "gentle"},
                 headers=tenant.headers)
    assert h.client.post("/v1/agents/payouts/rehearsals", json={"items": 0}, headers=tenant.headers).status_code == 422
    assert h.client.post("/v1/agents/nobody/rehearsals", json={}, headers=tenant.headers).status_code == 404

    r = h.client.post("/v1/agents/payouts/rehearsals", json={"profile": "gentle", "items": 4, "repeat": 1, "seed": 3},
                      headers=tenant.headers)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert r.headers["location"] == f"/v1/rehearsals/{rid}" and r.json()["state"] in ("queued", "running")
    again = h.client.post("/v1/agents/payouts/rehearsals", json={}, headers=tenant.headers)
    assert again.status_code == 409 and again.json()["code"] == "rehearsal_in_progress"

    deadline = time.monotonic() + 90
    while (found := h.client.get(f"/v1/rehearsals/{rid}", headers=tenant.headers).json())["state"] in (
            "queued", "running"):
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    assert found["state"] == "finished", found
    report = found["report"]
    assert found["verdict"] == report["verdict"]["result"] == "pass", report["verdict"]
    assert report["agent"] == "payouts" and report["version"] == 1 and report["profile"]["name"] == "gentle"
    assert report["figures"]["end_to_end"]["tries"] == 4 and found["measured"] == report["figures"]["end_to_end"][
        "measured"]
    humans = report["figures"]["human_decisions"]
    assert humans["approvals"] == humans["approved"] == 4, humans  # one decision per payout, all approved
    listed = h.client.get("/v1/rehearsals?agent=payouts", headers=tenant.headers).json()["data"]
    assert [x["id"] for x in listed] == [rid] and "report" not in listed[0]
    # the passed rehearsal opened the gate for version 1
    assert _submit(h, tenant, "payouts").status_code == 201
