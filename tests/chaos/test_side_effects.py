"""Side effects through a real HTTP tool survive kill -9 exactly once in effect; a non-idempotent call
whose outcome is unknown escalates instead of being repeated."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok, slow
from tests.chaos.conftest import effects_by_key, mailer_spec, put_effect_tool, wait_progress
from tests.conftest import Harness, Tenant

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.redis]
FAST_RECOVERY = {"MIDWATCH_LEASE_SECONDS": "2", "MIDWATCH_SWEEP_INTERVAL_SECONDS": "0.5"}


def _mailer(make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path, tool: str, *,
            idempotent: bool, items: int) -> tuple[Harness, Tenant, dict[str, Any], subprocess.Popen[bytes]]:
    """A scheduler and a worker process, and a run of the mailer over ``items`` items through ``tool``."""
    h = make_harness(db="postgres", broker="redis", worker=None, extra=FAST_RECOVERY)
    h.spawn("scheduler", log=tmp_path / "scheduler.log")
    first = h.spawn("worker", "--threads", "2", log=tmp_path / "worker1.log")
    tenant = h.onboard()
    put_effect_tool(h, tenant, upstream, tool, idempotent=idempotent)
    h.put_agent(tenant, mailer_spec(upstream, tool))
    return h, tenant, h.submit(tenant, "mailer", {"items": [{"n": i} for i in range(items)]}), first


def test_an_http_side_effect_happens_once_per_item_across_a_kill(make_harness: Callable[..., Harness],
                                                                  upstream: FaultyUpstream, tmp_path: Path) -> None:
    upstream.script("/effects/*", [slow(0.004, ok({"sent": True}))])
    h, tenant, run, first = _mailer(make_harness, upstream, tmp_path, "mail.send", idempotent=True, items=500)

    wait_progress(h, tenant, run["id"], 347)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    h.spawn("worker", "--threads", "2", log=tmp_path / "worker2.log")
    done = h.wait_run(tenant, run["id"], timeout=120)

    assert done["state"] == "succeeded" and done["items_done"] == 500, done
    keys = effects_by_key(upstream)
    assert set(keys) == {f"mw-{run['id']}-{i}-1" for i in range(500)}, "an item's effect is missing or mis-keyed"
    # the recording server acts once per key; a call cut off by the kill may be re-sent with the SAME key
    resent = {k: n for k, n in keys.items() if n > 1}
    assert len(resent) <= 1 and all(n == 2 for n in resent.values()), resent


def test_a_kill_during_a_non_idempotent_call_escalates_that_item_only(make_harness: Callable[..., Harness],
                                                                       upstream: FaultyUpstream,
                                                                       tmp_path: Path) -> None:
    upstream.script("/effects/*", [ok({"sent": True})])
    upstream.script("/effects/7", [slow(20, ok({"sent": True}))])
    h, tenant, run, first = _mailer(make_harness, upstream, tmp_path, "mail.send_once", idempotent=False, items=20)

    h.wait_for(lambda: bool(upstream.requests_to("/effects/7")), timeout=60, what="the call for item 7")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    h.spawn("worker", "--threads", "2", log=tmp_path / "worker2.log")
    done = h.wait_run(tenant, run["id"], timeout=120)

    assert done["state"] == "escalated", done
    items: list[dict[str, Any]] = h.client.get(f"/v1/runs/{run['id']}/items?limit=100",
                                               headers=tenant.headers).json()["data"]
    states = {i["item_index"]: i["state"] for i in items}
    assert states.pop(7) == "escalated" and set(states.values()) == {"done"}
    seven = next(i for i in items if i["item_index"] == 7)
    assert "unknown_outcome" in seven["reason"] and seven["failure_category"] == "state"
    assert len(upstream.requests_to("/effects/7")) == 1, "a non-idempotent call was repeated blindly"
    time.sleep(0.1)
    assert all(n == 1 for n in effects_by_key(upstream).values())
