"""The read models are derived off the hot path, in batches, and converge to exactly what a full recount of
the base tables gives — after a mixed workload with retries, failures, escalations and a worker killed
mid-run (real worker and scheduler processes on PostgreSQL + Redis)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox_upstream import burst_503, ok, rate_limit
from tests.chaos.conftest import wait_progress
from tests.conftest import Harness
from tests.tenants.reliability.recount import read_models, recount

MIXED = """\
apiVersion: midwatch/v1
name: mixed
scope: {{tools: [crm.get, sandbox.echo, sandbox.sleep], egress: ["127.0.0.1:{port}"]}}
input: {{items: true}}
steps:
  - id: fetch
    tool: crm.get
    args: {{n: "{{{{ item.n }}}}"}}
    on_dependency_failure: escalate
  - id: check
    tool: sandbox.echo
    args: {{n: "{{{{ item.n }}}}"}}
    rules: ["output.n % 7 != 3"]
  - id: pace
    tool: sandbox.sleep
    args: {{seconds: 0.03}}
"""


def _caught_up(tenants: set[str]) -> bool:
    from sqlalchemy import func, select

    from tenants.kit.db import read_only
    from tenants.reliability.models import ReadModelCursor
    from tenants.runs.models import DecisionEvent

    with read_only() as s:
        newest = s.scalar(select(func.max(DecisionEvent.id)))
        cursor = s.scalar(select(ReadModelCursor).where(ReadModelCursor.name == "reliability"))
        if cursor is None or newest is None or cursor.last_id < newest:
            return False
        # A gap is an id the deriver passed before its transaction committed; one that never appears was
        # rolled back (the killed worker's last write, a retried statement) and stays listed for GAP_TTL_S.
        # Caught up means no committed event waits in a gap.
        pending = [int(i) for i in cursor.gaps]
        return not pending or not s.scalar(select(func.count()).select_from(DecisionEvent)
                                           .where(DecisionEvent.id.in_(pending)))


@pytest.mark.postgres
@pytest.mark.redis
def test_read_models_converge_to_a_recount_after_failures_retries_escalations_and_a_killed_worker(
        make_harness: Callable[..., Harness], upstream: Any, tmp_path: Path) -> None:
    h = make_harness(db="postgres", broker="redis", worker=None,
                     extra={"MIDWATCH_LEASE_SECONDS": "2", "MIDWATCH_WORKER_THREADS": "2"})
    h.spawn("scheduler", log=tmp_path / "scheduler.log")  # the sweeper and the read-model deriver
    first = h.spawn("worker", log=tmp_path / "worker1.log")
    a, b = h.onboard(), h.onboard()
    port = upstream.url.rsplit(":", 1)[1]
    items = 60
    for n in range(items):
        if n % 10 == 4:
            upstream.script(f"/crm/{n}", [burst_503(20)])  # never recovers: the item escalates
        elif n % 3 == 0:
            upstream.script(f"/crm/{n}", [rate_limit("0"), ok({"n": n})])  # a retry, then success
        else:
            upstream.script(f"/crm/{n}", [ok({"n": n})])
    runs = {}
    for tenant in (a, b):
        r = h.client.put("/v1/tools/crm.get", headers=tenant.headers, json={
            "method": "GET", "url": f"{upstream.url}/crm/{{{{ args.n }}}}",
            "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05}})
        assert r.status_code in (200, 201), r.text
        h.put_agent(tenant, MIXED.format(port=port))
        runs[tenant.id] = h.submit(tenant, "mixed", {"items": [{"n": n} for n in range(items)]})["id"]
    wait_progress(h, a, runs[a.id], 15)
    os.kill(first.pid, signal.SIGKILL)  # mid-run, mid-step
    first.wait(timeout=10)
    h.spawn("worker", log=tmp_path / "worker2.log")
    for tenant in (a, b):
        done = h.wait_run(tenant, runs[tenant.id], timeout=180)
        assert done["state"] in ("failed", "escalated"), done  # 503 storms escalate, a broken rule fails
    h.client.post(f"/v1/runs/{runs[b.id]}/cancel", headers=b.headers)  # a no-op on an ended run
    r = h.client.post(f"/v1/runs/{runs[a.id]}/resume", headers=a.headers)  # escalated items run again
    assert r.status_code == 202, r.text
    h.wait_run(a, runs[a.id], timeout=180)
    tenants = {a.id, b.id}
    h.wait_for(lambda: _caught_up(tenants), timeout=30, what="the deriver to catch up")
    from datetime import timedelta

    from tenants.kit.db import read_only
    from tenants.kit.ids import utcnow

    since = (utcnow() - timedelta(hours=1)).replace(second=0, microsecond=0)  # time-to-start: the last hour
    with read_only() as s:
        expected, got = recount(s, tenants, starts_since=since), read_models(s, tenants, starts_since=since)
    for name in expected:
        assert got[name] == expected[name], name
    assert expected["failures"] and expected["steps"] and expected["health"]
    assert sum(n for *_, n in expected["starts"]) == 2  # each tenant's run started once
    kinds = [e["kind"] for e in h.events(a, runs[a.id])]
    ends = [k for k in kinds if k in ("run.failed", "run.escalated")]
    assert "run.resumed" in kinds and len(ends) == 2, kinds
