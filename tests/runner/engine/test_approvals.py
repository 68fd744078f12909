"""Risky actions wait for a human: approve, reject, expiry (default deny), single use, argument tampering;
and the escalation queue."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Harness, Tenant, spec

PAYER = """\
apiVersion: midwatch/v1
name: payer
scope: {{tools: [sandbox.echo, sandbox.record]}}
autonomy:
  approvals:
    - when: "step.tool == 'sandbox.record' && step.args.amount > 1000"
      route: {route}
      timeout_s: {timeout}
      on_timeout: {on_timeout}
steps:
  - id: check
    tool: sandbox.echo
    args: {{amount: "{{{{ input.amount }}}}", to: "{{{{ input.to }}}}"}}
  - id: pay
    tool: sandbox.record
    args: {{amount: "{{{{ steps.check.output.amount }}}}", to: "{{{{ steps.check.output.to }}}}"}}
"""


def _setup(h: Harness, *, route: str = "approver", timeout: int = 3600, on_timeout: str = "deny") -> tuple[Tenant, str]:
    tenant = h.onboard()
    h.put_agent(tenant, PAYER.format(route=route, timeout=timeout, on_timeout=on_timeout))
    r = h.client.post("/v1/keys", json={"role": "approver"}, headers=tenant.headers)
    return tenant, r.json()["key"]


def _waiting(h: Harness, tenant: Tenant, amount: int = 5000) -> tuple[dict[str, Any], dict[str, Any]]:
    run = h.submit(tenant, "payer", {"input": {"amount": amount, "to": "acme-supplier"}})
    h.wait_run(tenant, run["id"], states=("waiting_approval",), timeout=30)
    pending = h.client.get(f"/v1/approvals?state=pending&run_id={run['id']}", headers=tenant.headers).json()["data"]
    assert len(pending) == 1
    return run, pending[0]


def _records(h: Harness, tenant: Tenant) -> list[dict[str, Any]]:
    return list(h.client.get("/v1/sandbox/records", headers=tenant.headers).json()["data"])


def test_a_small_payment_needs_no_approval(harness: Harness) -> None:
    tenant, _ = _setup(harness)
    run = harness.submit(tenant, "payer", {"input": {"amount": 10, "to": "x"}})
    assert harness.wait_run(tenant, run["id"])["state"] == "succeeded"
    assert harness.client.get("/v1/approvals", headers=tenant.headers).json()["data"] == []


def test_a_risky_step_waits_then_continues_when_approved(harness: Harness) -> None:
    tenant, approver = _setup(harness)
    run, approval = _waiting(harness, tenant)
    assert approval["action"] == "sandbox.record" and approval["args"] == {"amount": 5000, "to": "acme-supplier"}
    assert approval["route"] == "approver" and approval["on_timeout"] == "deny"
    assert _records(harness, tenant) == [], "the risky action ran before approval"
    time.sleep(0.3)
    assert harness.run(tenant, run["id"])["state"] == "waiting_approval"

    r = harness.client.post(f"/v1/approvals/{approval['id']}/approve", json={"comment": "invoice checked"},
                            headers={"Authorization": f"Bearer {approver}"})
    assert r.status_code == 200 and r.json()["state"] == "approved", r.text
    done = harness.wait_run(tenant, run["id"], timeout=10)
    assert done["state"] == "succeeded", done
    assert len(_records(harness, tenant)) == 1
    kinds = [e["kind"] for e in harness.events(tenant, run["id"])]
    assert kinds.index("approval.requested") < kinds.index("approval.granted") < kinds.index("run.succeeded")
    granted = next(e for e in harness.events(tenant, run["id"]) if e["kind"] == "approval.granted")
    assert "invoice checked" in granted["why"]
    again = harness.client.post(f"/v1/approvals/{approval['id']}/approve",
                                headers={"Authorization": f"Bearer {approver}"})
    assert again.status_code == 409 and again.json()["code"] == "conflict", "approvals must be single-use"


def test_a_rejection_stops_the_item_without_acting(harness: Harness) -> None:
    tenant, approver = _setup(harness)
    run, approval = _waiting(harness, tenant)
    r = harness.client.post(f"/v1/approvals/{approval['id']}/reject", json={"comment": "wrong supplier"},
                            headers={"Authorization": f"Bearer {approver}"})
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    done = harness.wait_run(tenant, run["id"], timeout=10)
    assert done["state"] == "failed" and done["failure_category"] == "approval", done
    assert "wrong supplier" in done["reason"]
    assert _records(harness, tenant) == []


def test_only_the_routed_role_may_decide(harness: Harness) -> None:
    tenant, approver = _setup(harness, route="tenant-admin")
    viewer = harness.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["key"]
    _, approval = _waiting(harness, tenant)
    for key in (approver, viewer):
        r = harness.client.post(f"/v1/approvals/{approval['id']}/approve", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    assert harness.client.post(f"/v1/approvals/{approval['id']}/approve",
                               headers=tenant.headers).json()["state"] == "approved"


def test_an_unanswered_approval_expires_and_is_denied_by_default(harness: Harness) -> None:
    from runner.sweeper import sweep_once
    from tenants.kit.settings import get_settings

    tenant, _ = _setup(harness, timeout=1)
    run, approval = _waiting(harness, tenant)
    time.sleep(1.2)
    sweep_once(get_settings())
    done = harness.wait_run(tenant, run["id"], timeout=10)
    assert done["state"] == "failed" and "expired" in done["reason"] and "deny" in done["reason"], done
    assert harness.client.get(f"/v1/approvals/{approval['id']}", headers=tenant.headers).json()["state"] == "expired"
    assert _records(harness, tenant) == []


def test_on_timeout_approve_lets_the_action_through(harness: Harness) -> None:
    from runner.sweeper import sweep_once
    from tenants.kit.settings import get_settings

    tenant, _ = _setup(harness, timeout=1, on_timeout="approve")
    run, _ = _waiting(harness, tenant)
    time.sleep(1.2)
    sweep_once(get_settings())
    assert harness.wait_run(tenant, run["id"], timeout=10)["state"] == "succeeded"
    assert len(_records(harness, tenant)) == 1


def test_an_approval_for_other_arguments_is_not_valid(harness: Harness) -> None:
    from sqlalchemy import update

    from tenants.approvals.models import Approval
    from tenants.kit.db import unit_of_work

    tenant, approver = _setup(harness)
    run, approval = _waiting(harness, tenant)
    with unit_of_work() as session:  # the human is shown (and approves) a different action
        session.execute(update(Approval).where(Approval.id == approval["id"]).values(args_hash="f" * 64))
    harness.client.post(f"/v1/approvals/{approval['id']}/approve", headers={"Authorization": f"Bearer {approver}"})
    harness.wait_for(lambda: len(harness.client.get(f"/v1/approvals?run_id={run['id']}",
                                                    headers=tenant.headers).json()["data"]) == 2,
                     timeout=10, what="a fresh approval request")
    listed = harness.client.get(f"/v1/approvals?run_id={run['id']}", headers=tenant.headers).json()["data"]
    assert [a["state"] for a in listed] == ["superseded", "pending"]
    assert harness.run(tenant, run["id"])["state"] == "waiting_approval"
    assert "approval.invalidated" in [e["kind"] for e in harness.events(tenant, run["id"])]
    assert _records(harness, tenant) == []


def test_the_escalation_queue_lists_items_and_a_skip_finishes_the_run(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, spec(
        "drafter", {"id": "draft", "llm": {"model": "sandbox", "prompt": "Draft for {{ item.n }}",
                                            "sandbox": {"answer": "my password is hunter2"}},
                    "rules": ["!output.text.contains('password')"], "on_invalid": {"retry": 1, "then": "escalate"}},
        scope={"tools": ["sandbox.echo"]}, input={"items": True}))
    run = harness.submit(tenant, "drafter", {"items": [{"n": 1}]})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "escalated" and done["failure_category"] == "validation", done
    queue = harness.client.get("/v1/escalations", headers=tenant.headers).json()["data"]
    assert [(q["run_id"], q["item_index"]) for q in queue] == [(run["id"], 0)]
    assert "rejected the output" in queue[0]["reason"]
    failed = next(e for e in harness.events(tenant, run["id"]) if e["kind"] == "step.failed")
    assert [v["ok"] for v in failed["verdicts"] if v.get("check") == "rule"] == [False, False]
    r = harness.client.post(f"/v1/runs/{run['id']}/items/0/skip", json={"comment": "sent by hand"},
                            headers=tenant.headers)
    assert r.status_code == 200, r.text
    done = harness.wait_run(tenant, run["id"], timeout=10)
    assert done["state"] == "succeeded" and done["items_done"] == 1 and done["items_failed"] == 0, done
    assert harness.client.get("/v1/escalations", headers=tenant.headers).json()["data"] == []
