"""SIGTERM to a worker mid-run: it finishes its current step, hands the run back, and another worker
continues at once with no step lost and none repeated."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok
from tests.chaos.conftest import EFFECT_TOOL, assert_effects_once, put_effect_tool, wait_progress
from tests.conftest import Harness

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.redis]

PACED = """\
apiVersion: midwatch/v1
name: paced
scope: {tools: [sandbox.echo, sandbox.sleep, %s], egress: ["%s"]}
input: {items: true}
steps:
  - {id: read, tool: sandbox.echo, args: {n: "{{ item.n }}"}}
  - {id: pace, tool: sandbox.sleep, args: {seconds: 0.05}}
  - {id: send, tool: %s, args: {n: "{{ steps.read.output.n }}"}}
"""


def test_sigterm_hands_the_run_to_another_worker_without_losing_or_repeating_a_step(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path) -> None:
    upstream.script("/effects/*", [ok({"sent": True})])
    h = make_harness(db="postgres", broker="redis", worker=None, extra={"MIDWATCH_LEASE_SECONDS": "30"})
    first = h.spawn("worker", "--threads", "2", log=tmp_path / "first.log")
    tenant = h.onboard()
    put_effect_tool(h, tenant, upstream)
    h.put_agent(tenant, PACED % (EFFECT_TOOL, upstream.netloc, EFFECT_TOOL))
    run = h.submit(tenant, "paced", {"items": [{"n": i} for i in range(60)]})
    wait_progress(h, tenant, run["id"], 10)
    h.spawn("worker", "--threads", "2", log=tmp_path / "second.log")
    time.sleep(1)  # the second worker is consuming
    stopped_at = time.monotonic()
    sigterm_at = datetime.now(UTC)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, "the worker did not exit cleanly on SIGTERM"
    grace = time.monotonic() - stopped_at
    done = h.wait_run(tenant, run["id"], timeout=60)

    assert done["state"] == "succeeded" and done["items_done"] == 60, done
    assert grace < 10, f"shutdown took {grace:.1f}s"
    events = h.events(tenant, run["id"])
    steps = Counter((e["item_index"], e["step_id"]) for e in events if e["kind"] == "step.succeeded")
    assert len(steps) == 60 * 3 and max(steps.values()) == 1, "a step was lost or repeated"
    assert "run.resumed" in [e["kind"] for e in events]
    # a graceful hand-back finishes the step in flight: not even one call is re-sent
    assert_effects_once(upstream, {f"mw-{run['id']}-{i}-2" for i in range(60)}, resent_at_most=0)
    # the lease was handed back, not left to expire: the new owner took over long before the 30 s lease ran out
    resumed = next(e for e in events if e["kind"] == "run.resumed")
    took_over = (datetime.fromisoformat(resumed["created_at"].replace("Z", "+00:00")) - sigterm_at).total_seconds()
    assert took_over < 10, f"the second worker resumed {took_over:.1f}s after SIGTERM (lease not released?)"


LOOPING = """\
apiVersion: midwatch/v1
name: looping
scope: {tools: [sandbox.sleep]}
autonomy: {max_steps: 20}
steps:
  - id: work
    agent:
      model: sandbox
      prompt: "pace yourself"
      tools: [sandbox.sleep]
      sandbox:
        turns:
          - tool_calls: [%s]
          - final: {status: done}
"""


def test_sigterm_inside_an_agent_loop_hands_back_at_the_next_tool_call(make_harness: Callable[..., Harness],
                                                                         tmp_path: Path) -> None:
    """One item, one agent step, six slow tool calls in one turn: SIGTERM after the first call stops the worker
    after the call in flight (not after the whole step), and the next worker makes the remaining calls, none
    twice, without asking the model for the turn again."""
    calls = ", ".join(["{name: sandbox.sleep, arguments: {seconds: 0.6}}"] * 6)
    h = make_harness(db="postgres", broker="redis", worker=None, extra={"MIDWATCH_LEASE_SECONDS": "30"})
    first = h.spawn("worker", "--threads", "1", log=tmp_path / "first.log")
    tenant = h.onboard()
    h.put_agent(tenant, LOOPING % calls)
    run = h.submit(tenant, "looping", {"input": {}})
    h.wait_for(lambda: any(e["kind"] == "agent.tool_call" for e in h.events(tenant, run["id"])), timeout=30,
               what="the first tool call")
    first.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert first.wait(timeout=30) == 0, "the worker did not exit cleanly on SIGTERM"
    grace = time.monotonic() - stopped_at
    assert grace < 2.5, f"the worker took {grace:.1f}s: it finished the step instead of handing back"
    made = [e for e in h.events(tenant, run["id"]) if e["kind"] == "agent.tool_call"]
    assert len(made) < 6, "every call ran before the hand-back"

    h.spawn("worker", "--threads", "1", log=tmp_path / "second.log")
    done = h.wait_run(tenant, run["id"], timeout=60)
    assert done["state"] == "succeeded", done
    events = h.events(tenant, run["id"])
    whys = [e["why"] for e in events if e["kind"] == "agent.tool_call"]
    assert len(whys) == 6 and len(set(whys)) == 6, f"a call was lost or repeated: {whys}"
    assert len([e for e in events if e["kind"] == "agent.model_turn"]) == 2, "a turn was asked for again"
    assert "run.resumed" in [e["kind"] for e in events]
