"""The ``agent`` step: a bounded tool-calling loop over scoped tools, each call checkpointed and audited."""

from __future__ import annotations

import json

from tests.conftest import Harness


def _spec(answers: list[object], *, max_iterations: int = 4, tools: str = "[sandbox.echo, sandbox.record]") -> str:
    return f"""\
apiVersion: midwatch/v1
name: looper
scope: {{tools: [sandbox.echo, sandbox.record, sandbox.sleep]}}
steps:
  - id: work
    agent:
      model: sandbox
      prompt: "Look up the order and record a note"
      tools: {tools}
      max_iterations: {max_iterations}
      sandbox: {{answers: {json.dumps([json.dumps(a) for a in answers])}}}
    output_schema: {{type: object, required: [status]}}
"""


def test_the_loop_calls_scoped_tools_then_finishes(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, _spec([
        {"tool": "sandbox.echo", "args": {"order": 42}, "why": "look the order up"},
        {"tool": "sandbox.record", "args": {"note": "order 42 ok"}, "why": "leave a note"},
        {"final": {"status": "done"}, "why": "both calls succeeded"},
    ]))
    run = harness.submit(tenant, "looper", {"input": None})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "succeeded" and done["llm_calls"] == 3, done
    events = harness.events(tenant, run["id"])
    calls = [e for e in events if e["kind"] == "agent.tool_call"]
    assert [(c["chosen"], c["why"]) for c in calls] == [("sandbox.echo", "look the order up"),
                                                       ("sandbox.record", "leave a note")]
    final = next(e for e in events if e["kind"] == "step.succeeded")
    assert final["chosen"] == "final" and final["why"] == "both calls succeeded"
    records = harness.client.get("/v1/sandbox/records", headers=tenant.headers).json()["data"]
    assert [r["idempotency_key"] for r in records] == [f"mw-{run['id']}-0-0.2"]


def test_the_loop_is_bounded_by_max_iterations(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, _spec([{"tool": "sandbox.echo", "args": {"again": True}}], max_iterations=3))
    run = harness.submit(tenant, "looper", {"input": None})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "escalated" and "max_iterations=3" in done["reason"], done
    assert done["llm_calls"] == 3
    assert len([e for e in harness.events(tenant, run["id"]) if e["kind"] == "agent.tool_call"]) == 3


def test_a_tool_outside_the_loop_is_a_blocked_scope_violation(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, _spec([{"tool": "sandbox.sleep", "args": {"seconds": 1}}], tools="[sandbox.echo]"))
    run = harness.submit(tenant, "looper", {"input": None})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "failed" and done["failure_category"] == "scope", done
    violations = harness.client.get("/v1/security/violations", headers=tenant.headers).json()["data"]
    assert [(v["kind"], v["target"]) for v in violations] == [("tool", "sandbox.sleep")]
    audit = harness.client.get("/v1/audit?action=scope.violation", headers=tenant.headers).json()["data"]
    assert len(audit) == 1


def test_the_final_answer_is_validated_like_any_step(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, _spec([{"final": {"oops": True}}]))
    run = harness.submit(tenant, "looper", {"input": None})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "failed" and done["failure_category"] == "validation", done
