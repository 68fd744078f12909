"""kill -9 a worker between two tool calls of one model turn: the new worker replays the turn and the first
call from their checkpoints (the model is not asked again, the first side effect not repeated), makes the
second call, and the run's cost is what the budget ledger charged.

Counted at the source: model requests and side effects at the upstream that received them, money at the
budget ledger's rows, not in the run's own counters."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.sandbox_upstream import FaultyUpstream, model_turn, ok, slow, tool_call
from tests.chaos.conftest import EFFECT_TOOL, effects_by_key, put_effect_tool
from tests.conftest import Harness
from tests.runner.engine.agent_backends import (
    assert_cost_matches_the_ledger,
    model_requests,
    onboard_with_model,
    tool_results,
)
from tests.runner.providers import conftest as providers

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.redis]
upstream = providers.upstream  # every model request and answer must match the SDK types
FAST_RECOVERY = {"MIDWATCH_LEASE_SECONDS": "2", "MIDWATCH_SWEEP_INTERVAL_SECONDS": "0.5"}

AGENT = """\
apiVersion: midwatch/v1
name: follower
scope: {{tools: [{effect}, crm.slow_lookup], egress: ["{netloc}"], secrets: [llm_key]}}
steps:
  - id: follow_up
    agent:
      model: brain
      prompt: "Send the reminder for order {{{{ input.order }}}}, then check the order."
      tools: [{effect}, crm.slow_lookup]
    output_schema: {{type: object, required: [status]}}
"""


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_a_kill_between_two_tool_calls_resumes_at_the_second(make_harness: Callable[..., Harness],
                                                              upstream: FaultyUpstream, tmp_path: Path,
                                                              backend: str) -> None:
    path = "/v1/chat/completions" if backend == "openai" else "/v1/messages"
    upstream.script(path, [model_turn(tool_calls=[tool_call(EFFECT_TOOL, {"n": 42}),
                                                  tool_call("crm.slow_lookup", {"order": 42})]),
                           model_turn(final={"status": "sent"})])
    upstream.script("/effects/*", [ok({"sent": True})])
    upstream.script("/crm/orders/42", [slow(60, ok({"late": True})), ok({"order": 42, "status": "shipped"})])
    h = make_harness(db="postgres", broker="redis", worker=None, extra=FAST_RECOVERY)
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    first = h.spawn("worker", "--threads", "2", log=tmp_path / "worker1.log")
    tenant = onboard_with_model(h, upstream, backend)
    put_effect_tool(h, tenant, upstream)
    r = h.client.put("/v1/tools/crm.slow_lookup", headers=tenant.headers, json={
        "method": "GET", "url": f"{upstream.url}/crm/orders/{{{{ args.order }}}}", "timeout_s": 120,
        "args_schema": {"type": "object", "required": ["order"], "properties": {"order": {"type": "integer"}}}})
    assert r.status_code == 201, r.text
    h.put_agent(tenant, AGENT.format(effect=EFFECT_TOOL, netloc=upstream.netloc))
    run = h.submit(tenant, "follower", {"input": {"order": 42}})

    # the first call is done (and checkpointed: the second starts only after its commit); the second hangs
    h.wait_for(lambda: bool(upstream.requests_to("/crm/orders/42")), timeout=60, what="the second tool call")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    h.spawn("worker", "--threads", "2", log=tmp_path / "worker2.log")
    done = h.wait_run(tenant, run["id"], timeout=120)

    assert done["state"] == "succeeded", done
    assert effects_by_key(upstream) == {f"mw-{run['id']}-0-0.1.1": 1}, "the first tool call was repeated"
    assert len(upstream.requests_to("/crm/orders/42")) == 2  # the call cut off by the kill, then once more
    requests = model_requests(upstream)
    assert len(requests) == 2, "the model was asked for the checkpointed turn again"
    # the conversation after the resume holds both results, under the call ids the model gave
    ids = [call_id for call_id, _, _ in tool_results(requests[1])]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(i.endswith(("_0_0", "_0_1")) for i in ids), ids
    events = h.events(tenant, run["id"])
    assert "run.resumed" in [e["kind"] for e in events]
    assert [e["chosen"] for e in events if e["kind"] == "agent.tool_call"] == [EFFECT_TOOL, "crm.slow_lookup"]
    assert done["llm_calls"] == 2
    assert_cost_matches_the_ledger(h, tenant, done)
