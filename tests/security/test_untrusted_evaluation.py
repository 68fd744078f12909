"""A tenant's patterns and rules cannot freeze the platform: what they cost is bounded by RE2 and by the data.

Finding 2 of issue 16: ``pattern: "^(a+)+$"`` and a 27-character input held a submit for 3.8 s and
slowed every other tenant. Patterns now run on RE2 (linear time) and whatever RE2 cannot run is refused
at upload with a 422 naming the pattern's path.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.conftest import Harness, Tenant, simple_spec, spec

EVIL_INPUT_SPEC = """\
apiVersion: midwatch/v1
name: evil
scope: {tools: [sandbox.echo]}
input:
  schema: {type: object, properties: {name: {type: string, pattern: "%s"}}}
steps:
  - {id: echo, tool: sandbox.echo, args: {name: "{{ input.name }}"}}
"""


def _put(h: Harness, tenant: Tenant, spec: str, name: str) -> Any:
    return h.client.put(f"/v1/agents/{name}", content=spec.encode(),
                        headers={**tenant.headers, "Content-Type": "application/yaml"})


def test_a_backtracking_pattern_is_linear_on_re2_and_another_tenant_is_not_held_up(harness: Harness) -> None:
    attacker, bystander = harness.onboard(), harness.onboard()
    assert _put(harness, attacker, EVIL_INPUT_SPEC % "^(a+)+$", "evil").status_code == 201
    harness.put_agent(bystander, simple_spec())

    results: dict[str, Any] = {}

    def bystander_submits() -> None:
        started = time.monotonic()
        results["bystander"] = harness.client.post("/v1/agents/greeter/runs", headers=bystander.headers,
                                                   json={"input": {"customer": "ann", "amount": 1}})
        results["bystander_s"] = time.monotonic() - started

    other = threading.Thread(target=bystander_submits)
    started = time.monotonic()
    other.start()
    r = harness.client.post("/v1/agents/evil/runs", headers=attacker.headers,
                            json={"input": {"name": "a" * 5000 + "!"}})
    attacker_s = time.monotonic() - started
    other.join(timeout=30)

    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error" and "does not match" in r.json()["detail"]
    assert attacker_s < 5, f"the submit took {attacker_s:.1f}s"
    assert not other.is_alive() and results["bystander"].status_code == 201, results
    assert results["bystander_s"] < 10
    ok = harness.client.post("/v1/agents/evil/runs", headers=attacker.headers, json={"input": {"name": "a" * 5000}})
    assert ok.status_code == 201, ok.text


def test_a_pattern_re2_cannot_run_is_refused_at_upload_with_its_path(harness: Harness) -> None:
    tenant = harness.onboard()
    for pattern in ("(a)\\\\1", "^(?=a)a+$"):
        r = _put(harness, tenant, EVIL_INPUT_SPEC % pattern, "evil")
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == "spec_invalid", body
        [error] = body["errors"]
        assert error["path"] == "input.schema" and error["code"] == "json_schema", error
        assert "properties/name/pattern" in error["message"] and "linear time" in error["message"], error


def test_a_tool_response_schema_re2_cannot_run_is_refused_with_422(harness: Harness) -> None:
    tenant = harness.onboard()
    r = harness.client.put("/v1/tools/crm.get", headers=tenant.headers, json={
        "url": "https://api.example.com/x",
        "response_schema": {"type": "object", "patternProperties": {"(x)\\1": {"type": "string"}}}})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error" and "response_schema" in r.json()["detail"]
    assert "patternProperties/(x)\\1" in r.json()["detail"]
    remote = harness.client.put("/v1/tools/crm.get", headers=tenant.headers, json={
        "url": "https://api.example.com/x", "response_schema": {"$ref": "http://169.254.169.254/latest/"}})
    assert remote.status_code == 422 and "outside this schema" in remote.json()["detail"], remote.text


QUADRATIC_RULE_SPEC = spec("quadratic", {"id": "echo", "tool": "sandbox.echo", "args": {"xs": "{{ input.xs }}"},
                                         "rules": ["output.xs.all(a, output.xs.all(b, a + b >= 0))"]})

QUADRATIC_APPROVAL_SPEC = """\
apiVersion: midwatch/v1
name: quadratic-approval
scope: {tools: [sandbox.echo]}
autonomy:
  approvals:
    - {when: "step.args.xs.exists(a, step.args.xs.exists(b, a + b < 0))", route: approver}
steps:
  - id: echo
    tool: sandbox.echo
    args: {xs: "{{ input.xs }}"}
"""


def _item(harness: Harness, tenant: Tenant, run_id: str) -> dict[str, Any]:
    r = harness.client.get(f"/v1/runs/{run_id}/items", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"][0])


def test_a_rule_whose_cost_grows_with_the_data_fails_its_item_and_nobody_else_notices(harness: Harness) -> None:
    attacker, bystander = harness.onboard(), harness.onboard()
    harness.put_agent(attacker, QUADRATIC_RULE_SPEC)
    harness.put_agent(attacker, QUADRATIC_APPROVAL_SPEC)
    harness.put_agent(bystander, simple_spec())
    xs = list(range(6000))  # 36 million pairs: minutes of an uninterruptible CEL evaluation before

    started = time.monotonic()
    run = harness.submit(attacker, "quadratic", {"input": {"xs": xs}})
    gated = harness.submit(attacker, "quadratic-approval", {"input": {"xs": xs}})
    other = harness.submit(bystander, "greeter", {"input": {"customer": "ann", "amount": 1}})
    assert harness.wait_run(bystander, other["id"], timeout=30)["state"] == "succeeded"
    done = harness.wait_run(attacker, run["id"], timeout=30)
    held = harness.wait_run(attacker, gated["id"], timeout=30)
    assert time.monotonic() - started < 30

    item = _item(harness, attacker, run["id"])
    assert done["state"] in ("failed", "escalated"), done
    assert item["failure_category"] == "validation", item
    assert "could visit about" in item["reason"] and "300,000" in item["reason"], item
    gate = _item(harness, attacker, gated["id"])
    assert held["state"] in ("failed", "escalated") and gate["failure_category"] == "validation", gate
    assert "approval rule" in gate["reason"] and "could visit about" in gate["reason"], gate
