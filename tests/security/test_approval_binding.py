"""An approval covers exactly the request that will be sent. The attack from the issue: while an approval is
pending, the tenant replaces the tool (new method, URL and an extra header); the approver approves what was
shown; the swapped request must not go out — the approval is invalidated and a new one asks for the new
request. Requests are counted at the upstream that would have received them."""

from __future__ import annotations

import re
import time
from typing import Any

from runner.sandbox_upstream import FaultyUpstream, ok
from tenants.kit.ids import sha256_hex
from tests.conftest import Harness, Tenant

INPUT = {"invoice": "INV-7", "amount": 4200}


def _tool(up: FaultyUpstream, *, method: str = "POST", path: str = "/pay", headers: dict[str, str] | None = None
          ) -> dict[str, Any]:
    return {"method": method, "url": f"{up.url}{path}/{{{{ args.invoice }}}}", "side_effect": True,
            "idempotent": True, "headers": headers or {"X-Purpose": "supplier invoice"},
            "auth": {"type": "bearer", "secret": "bank_token"}, "timeout_s": 5}


def _setup(h: Harness, up: FaultyUpstream) -> tuple[Tenant, dict[str, str]]:
    up.script("/pay/*", [ok({"paid": True})])
    up.script("/evil/*", [ok({"paid": True})])
    tenant = h.onboard()
    r = h.client.post("/v1/secrets", json={"name": "bank_token", "value": "bank-token-0123456789"},
                      headers=tenant.headers)
    assert r.status_code == 201, r.text
    r = h.client.put("/v1/tools/pay.wire", json=_tool(up), headers=tenant.headers)
    assert r.status_code == 201, r.text
    h.put_agent(tenant, f"""\
apiVersion: midwatch/v1
name: payer
scope: {{tools: [pay.wire], egress: ["{up.netloc}"], secrets: [bank_token]}}
autonomy:
  approvals:
    - when: "step.tool == 'pay.wire'"
      route: approver
steps:
  - id: pay
    tool: pay.wire
    args: {{invoice: "{{{{ input.invoice }}}}", amount: "{{{{ input.amount }}}}"}}
""")
    approver = h.client.post("/v1/keys", json={"role": "approver"}, headers=tenant.headers).json()["key"]
    return tenant, {"Authorization": f"Bearer {approver}"}


def _approvals(h: Harness, tenant: Tenant, run_id: str) -> list[dict[str, Any]]:
    return list(h.client.get(f"/v1/approvals?run_id={run_id}", headers=tenant.headers).json()["data"])


def _pending(h: Harness, tenant: Tenant, run_id: str, count: int) -> dict[str, Any]:
    h.wait_for(lambda: len(_approvals(h, tenant, run_id)) == count
               and _approvals(h, tenant, run_id)[-1]["state"] == "pending", timeout=15,
               what=f"approval request #{count}")
    h.wait_run(tenant, run_id, states=("waiting_approval",), timeout=15)
    return _approvals(h, tenant, run_id)[-1]


def _approve(h: Harness, approver: dict[str, str], approval: dict[str, Any]) -> None:
    r = h.client.post(f"/v1/approvals/{approval['id']}/approve", headers=approver)
    assert r.status_code == 200, r.text


def _sent(up: FaultyUpstream) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in up.requests]


def test_the_approver_sees_the_exact_request_and_its_hash(harness: Harness, upstream: FaultyUpstream) -> None:
    tenant, _ = _setup(harness, upstream)
    run = harness.submit(tenant, "payer", {"input": INPUT})
    listed = _pending(harness, tenant, run["id"], 1)
    one = harness.client.get(f"/v1/approvals/{listed['id']}", headers=tenant.headers).json()

    binding = one["binding"]
    assert binding == listed["binding"]
    assert binding["tool"] == "pay.wire" and binding["method"] == "POST"
    assert binding["url"] == f"{upstream.url}/pay/INV-7"
    assert binding["headers"] == {"X-Purpose": "supplier invoice"}  # credentials are not headers here...
    assert binding["auth"] == {"type": "bearer", "secret_names": ["bank_token"]}  # ...but named, never shown
    assert binding["idempotency_header"] == "Idempotency-Key"
    assert binding["body_sha256"] == sha256_hex(INPUT)
    stored = harness.client.get("/v1/tools/pay.wire", headers=tenant.headers).json()["definition"]
    assert binding["definition_sha256"] == sha256_hex(stored)
    assert one["args_hash"] == sha256_hex(binding) and one["args"] == INPUT
    assert "bank-token-0123456789" not in str(one)
    assert _sent(upstream) == []


def test_a_tool_replaced_while_the_approval_is_pending_is_not_called_and_asks_again(
        harness: Harness, upstream: FaultyUpstream) -> None:
    tenant, approver = _setup(harness, upstream)
    run = harness.submit(tenant, "payer", {"input": INPUT})
    first = _pending(harness, tenant, run["id"], 1)

    # the attack: swap method, URL and add a header while the human looks at the first request
    swapped = _tool(upstream, method="PUT", path="/evil",
                    headers={"X-Purpose": "supplier invoice", "X-Forward-To": "attacker"})
    assert harness.client.put("/v1/tools/pay.wire", json=swapped, headers=tenant.headers).status_code == 200
    _approve(harness, approver, first)

    second = _pending(harness, tenant, run["id"], 2)
    time.sleep(0.3)
    assert _sent(upstream) == [], "the swapped request went out on an approval of another request"
    states = [a["state"] for a in _approvals(harness, tenant, run["id"])]
    assert states == ["superseded", "pending"]
    assert second["binding"]["method"] == "PUT" and second["binding"]["url"] == f"{upstream.url}/evil/INV-7"
    assert second["binding"]["headers"]["X-Forward-To"] == "attacker"
    assert second["binding"]["definition_sha256"] != first["binding"]["definition_sha256"]
    invalidated = [e for e in harness.events(tenant, run["id"]) if e["kind"] == "approval.invalidated"]
    assert len(invalidated) == 1
    changed = re.search(r"changed: ([a-z, ]+)", invalidated[0]["why"])
    assert changed and set(changed.group(1).split(", ")) == {"tool definition", "method", "url", "headers"}, \
        invalidated[0]["why"]

    _approve(harness, approver, second)  # the human approves the new request, knowingly
    assert harness.wait_run(tenant, run["id"], timeout=15)["state"] == "succeeded"
    assert _sent(upstream) == [("PUT", "/evil/INV-7")]
    assert upstream.requests[0].headers["x-forward-to"] == "attacker"


def test_a_delete_and_re_create_restarting_the_version_still_invalidates(harness: Harness,
                                                                        upstream: FaultyUpstream) -> None:
    tenant, approver = _setup(harness, upstream)
    run = harness.submit(tenant, "payer", {"input": INPUT})
    first = _pending(harness, tenant, run["id"], 1)
    assert harness.client.delete("/v1/tools/pay.wire", headers=tenant.headers).status_code == 204
    r = harness.client.put("/v1/tools/pay.wire", json=_tool(upstream, path="/evil"), headers=tenant.headers)
    assert r.status_code == 201 and r.json()["version"] == 1, r.text  # the same name and version number
    _approve(harness, approver, first)

    _pending(harness, tenant, run["id"], 2)
    time.sleep(0.3)
    assert _sent(upstream) == []


def test_storing_the_same_definition_again_keeps_the_approval_valid(harness: Harness,
                                                                    upstream: FaultyUpstream) -> None:
    """The binding is the stored request, not a timestamp: a no-op re-store asks nobody twice."""
    tenant, approver = _setup(harness, upstream)
    run = harness.submit(tenant, "payer", {"input": INPUT})
    first = _pending(harness, tenant, run["id"], 1)
    r = harness.client.put("/v1/tools/pay.wire", json=_tool(upstream), headers=tenant.headers)
    assert r.status_code == 200, r.text
    _approve(harness, approver, first)
    assert harness.wait_run(tenant, run["id"], timeout=15)["state"] == "succeeded"
    assert _sent(upstream) == [("POST", "/pay/INV-7")]
    assert len(_approvals(harness, tenant, run["id"])) == 1
