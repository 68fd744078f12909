"""`midwatch status`: healthy / degraded / failing with reasons, from the database, as text or JSON, with an
exit code a script can use (0 / 1 / 2, and 3 when the database cannot be read)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from midwatch.heartbeat import HeartbeatThread
from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.settings import get_settings
from tenants.observability.service import Heartbeat, record_heartbeat
from tests.conftest import ROOT, Harness
from tests.tenants.observability.conftest import DRAFTER


def _status(h: Harness, fmt: str = "json", **env: str) -> tuple[int, Any]:
    done = subprocess.run([sys.executable, "-m", "midwatch.cli", "status", "--format", fmt],
                          env={**os.environ, **h.env, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if fmt == "json" else done.stdout


def _alive(h: Harness) -> Callable[[], None]:
    """Given a live scheduler next to the harness's worker threads (both publish heartbeats)."""
    scheduler = HeartbeatThread(get_settings(), "scheduler", health_port=9090)
    scheduler.start()
    return scheduler.stop


def test_nothing_running_is_failing_with_both_reasons(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker=None)
    code, report = _status(h)
    assert code == 2 and report["status"] == "failing" and report["exit_code"] == 2
    checks = {p["check"]: p for p in report["problems"]}
    assert set(checks) == {"workers", "scheduler"}
    assert "no worker heartbeat" in checks["workers"]["message"]
    assert report["facts"]["workers_alive"] == 0


def test_a_live_worker_and_scheduler_with_nothing_wrong_is_healthy(harness: Harness) -> None:
    stop = _alive(harness)
    try:
        code, report = _status(harness)
        assert (code, report["status"], report["problems"]) == (0, "healthy", [])
        assert report["facts"]["workers_alive"] == 1 and report["facts"]["schedulers_alive"] == 1
        kinds = sorted((p["kind"], p["health_port"]) for p in report["facts"]["processes"])
        assert kinds == [("scheduler", 9090), ("worker", None)]
        code, screen = _status(harness, "text")
        assert code == 0 and screen.startswith("Midwatch: HEALTHY")
        assert "scheduler" in screen and "metrics :9090" in screen
    finally:
        stop()


def test_an_escalation_waiting_too_long_is_degraded_and_names_the_tenant(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, DRAFTER)
    run = harness.submit(tenant, "drafter", {"input": {}})
    assert harness.wait_run(tenant, run["id"])["state"] == "escalated"
    with unit_of_work() as session:  # the human has not looked for 45 minutes
        session.execute(text("UPDATE runs SET updated_at = :at WHERE id = :id"),
                        {"at": utcnow() - timedelta(minutes=45), "id": run["id"]})
    stop = _alive(harness)
    try:
        code, report = _status(harness)
        assert code == 1 and report["status"] == "degraded"
        (problem,) = report["problems"]
        assert problem["check"] == "escalations" and problem["tenant"] == tenant.name
        assert "1 escalated run(s) waiting for a human, the oldest for 45m" in problem["message"]
        assert report["facts"]["escalations"]["waiting"] == 1
        code, screen = _status(harness, "text")
        assert code == 1 and screen.startswith("Midwatch: DEGRADED - 1 problem")
        assert f"[{tenant.name}]" in screen
    finally:
        stop()


def test_a_worker_that_stopped_beating_is_dead(harness: Harness) -> None:
    harness.services.stop()  # the harness's worker leaves cleanly (its row goes), then a crashed one is seen
    long_ago = utcnow() - timedelta(minutes=5)
    with unit_of_work() as session:
        record_heartbeat(session, Heartbeat(id="worker:gone:1:abc", kind="worker", hostname="gone", pid=1,
                                            version="0.1.0", started_at=long_ago, interval_s=5.0), now=long_ago)
    stop = _alive(harness)
    try:
        code, report = _status(harness)
        assert code == 2 and [p["check"] for p in report["problems"]] == ["workers"]
        (gone,) = [p for p in report["facts"]["processes"] if p["kind"] == "worker"]
        assert gone["alive"] is False and gone["last_seen_s"] >= 299
    finally:
        stop()
        harness.services = None


def test_an_unreachable_database_is_unknown_in_one_line(harness: Harness) -> None:
    code, screen = _status(harness, "text", MIDWATCH_DATABASE_URL="postgresql://postgres@127.0.0.1:9/nowhere")
    assert code == 3
    assert screen.startswith("Midwatch: UNKNOWN - cannot read the database") and len(screen.splitlines()) == 1
