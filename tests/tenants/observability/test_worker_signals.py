"""A real worker process (PostgreSQL + Redis) while a run succeeds after a retry and another fails validation
and is escalated: its /metrics, scraped and parsed, and its log, line by line.

The engine reports through ``tenants.kit.metrics`` and binds its log context once per slice and
per step, so every figure names its tenant and agent and every log line of a run carries its fields.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok, status
from tests.conftest import Harness, Tenant, free_port
from tests.tenants.observability.conftest import DRAFTER, Samples, parse, put_chaser, value

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def ran(make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path
        ) -> tuple[Harness, Tenant, Path, int]:
    """Given a worker process that ran a retried run and an escalated one."""
    h = make_harness(db="postgres", broker="redis", worker=None,
                     extra={"MIDWATCH_LOG_FORMAT": "json", "MIDWATCH_LOG_LEVEL": "info"})
    log = tmp_path / "worker.log"
    port = free_port()
    h.spawn("worker", extra_env={"MIDWATCH_HEALTH_PORT": str(port)}, log=log)
    tenant = h.onboard()
    put_chaser(h, tenant, upstream, invoice="INV-1")
    h.put_agent(tenant, DRAFTER)
    upstream.script("/crm/invoices/INV-1", [status(503), ok({"amount": 1})])
    retried = h.submit(tenant, "chaser", {"input": {}})
    escalated = h.submit(tenant, "drafter", {"input": {}})
    assert h.wait_run(tenant, retried["id"], timeout=60)["state"] == "succeeded"
    assert h.wait_run(tenant, escalated["id"], timeout=60)["state"] == "escalated"
    time.sleep(0.5)
    return h, tenant, log, port


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def test_the_workers_metrics_answer_and_carry_no_database_gauges(ran: tuple[Harness, Tenant, Path, int]) -> None:
    _, _, _, port = ran
    m = _scrape(port)
    assert value(m, "midwatch_worker_heartbeat_timestamp_seconds", kind="worker") is not None
    assert abs((value(m, "midwatch_worker_heartbeat_timestamp_seconds", kind="worker") or 0) - time.time()) < 30
    assert "midwatch_queue_depth" not in m, "workers leave the database gauges to the api and scheduler"
    assert sum(v for _, v in m.get("midwatch_steps_total", [])) >= 2, "the two runs' steps are counted"


def test_every_line_the_worker_writes_is_json(ran: tuple[Harness, Tenant, Path, int]) -> None:
    _, _, log, _ = ran
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    parsed = [json.loads(line) for line in lines]  # raises on the first line that is not JSON
    assert {"worker_started", "health_server_started"} <= {p["event"] for p in parsed}


def test_the_workers_step_and_run_metrics_name_the_tenant_and_agent(ran: tuple[Harness, Tenant, Path, int]) -> None:
    _, tenant, _, port = ran
    m = _scrape(port)
    t = tenant.id
    assert value(m, "midwatch_steps_total", tenant=t, agent="chaser", outcome="succeeded") == 1.0
    assert value(m, "midwatch_step_retries_total", tenant=t, agent="chaser") == 1.0
    assert value(m, "midwatch_step_failures_total", tenant=t, agent="drafter", category="validation") == 1.0
    assert value(m, "midwatch_runs_finished_total", tenant=t, agent="drafter", state="escalated",
                 category="validation") == 1.0
    assert value(m, "midwatch_runs_started_total", tenant=t, agent="chaser") == 1.0
    assert value(m, "midwatch_run_time_to_start_seconds_count", tenant=t) == 2.0
    assert value(m, "midwatch_model_calls_total", tenant=t, agent="drafter", provider="sandbox", outcome="ok") == 1.0


def test_every_line_of_a_run_carries_the_bound_fields(ran: tuple[Harness, Tenant, Path, int]) -> None:
    _, tenant, log, _ = ran
    parsed: list[dict[str, Any]] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    of_runs = [p for p in parsed if "run_id" in p]
    assert of_runs
    for line in of_runs:
        assert line.get("tenant_id") == tenant.id and line.get("agent"), line
    failed = next(p for p in of_runs if p["event"] == "step_failed")
    assert failed["step"] == "draft" and failed["item"] == 0 and failed["failure_category"] == "validation"
