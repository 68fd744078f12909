"""The API's /metrics, scraped and parsed while runs progress: a run that succeeds after a retry, one that
fails validation and is escalated, one that waits for an approval; with a budget near its limit, an open
breaker, a secret under a rotation policy and a live worker. Every figure is the tenant's, labels stay
bounded, and the database gauges appear once however many API processes serve the scrape."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok, status
from runner.tools.breaker import BreakerState
from tenants.catalog.repository import CatalogRepository
from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.reliability.derive import derive_all
from tests.conftest import ROOT, Harness, Tenant
from tests.tenants.observability.conftest import DRAFTER, Samples, parse, put_chaser, value

INVOICE = {"amount": 120, "email": "billing@example.com"}
PAYER = """\
apiVersion: midwatch/v1
name: payer
scope: {tools: [sandbox.echo, sandbox.record]}
autonomy:
  approvals:
    - {when: "step.tool == 'sandbox.record'", route: approver, timeout_s: 3600}
steps:
  - {id: check, tool: sandbox.echo, args: {amount: "{{ input.amount }}"}}
  - {id: pay, tool: sandbox.record, args: {amount: "{{ steps.check.output.amount }}"}}
"""
# Label names any series may carry; never a run, item, approval or request id (README "Metrics").
BOUNDED_LABELS = {"tenant", "tenant_name", "status", "agent", "state", "outcome", "category", "provider",
                  "direction", "event_type", "host", "secret", "step", "metric", "period", "window", "kind", "version",
                  "le", "implementation", "major", "minor", "patchlevel", "generation"}
ID_LIKE = re.compile(r"^(run|apr|itm|req|del|key)_[0-9a-f]{8,}")



@pytest.fixture
def progressed(harness: Harness, upstream: FaultyUpstream) -> tuple[Harness, Tenant, dict[str, str]]:
    """Given a tenant whose runs went through a retry, a validation failure and an approval wait."""
    tenant = harness.onboard()
    r = harness.client.put(f"/v1/admin/tenants/{tenant.name}/budgets", headers=harness.op_headers,
                           json=[{"metric": "runs", "limit": 3, "period": "day"}])
    assert r.status_code == 200, r.text
    r = harness.client.post("/v1/secrets", headers=tenant.headers,
                            json={"name": "crm_token", "value": "s3cr3t-value-1", "max_age_days": 30})
    assert r.status_code == 201, r.text
    upstream.script("/crm/invoices/INV-1", [status(503), ok(INVOICE)])
    put_chaser(harness, tenant, upstream)
    harness.put_agent(tenant, DRAFTER)
    harness.put_agent(tenant, PAYER)
    runs = {"retried": harness.submit(tenant, "chaser", {"input": {"id": "INV-1"}})["id"],
            "escalated": harness.submit(tenant, "drafter", {"input": {}})["id"],
            "waiting": harness.submit(tenant, "payer", {"input": {"amount": 5000}})["id"]}
    assert harness.wait_run(tenant, runs["retried"])["state"] == "succeeded"
    escalated = harness.wait_run(tenant, runs["escalated"])
    assert escalated["state"] == "escalated" and escalated["failure_category"] == "validation", escalated
    harness.wait_run(tenant, runs["waiting"], states=("waiting_approval",))
    with unit_of_work() as session:
        CatalogRepository(session, tenant.id).save_breaker("crm.example.com", BreakerState(
            state="open", failure_times=(1.0, 2.0), opened_at=2.0, last_reason="HTTP 503 x5").to_dict(), utcnow())
    derive_all()  # the read models the agent figures come from (the scheduler derives them every second)
    return harness, tenant, runs


def test_the_tenants_live_figures_are_scraped_from_the_api(progressed: tuple[Harness, Tenant, dict[str, str]],
                                                          scrape_api: Any) -> None:
    harness, tenant, _ = progressed
    harness.wait_for(lambda: value(scrape_api(harness), "midwatch_agent_runs", tenant=tenant.id, agent="chaser",
                                   outcome="succeeded", window="24h") == 1.0, timeout=10, what="the rollup")
    m = scrape_api(harness)
    t = tenant.id
    assert value(m, "midwatch_tenant_info", tenant=t) == 1.0
    assert value(m, "midwatch_tenant_info", tenant=t, tenant_name=tenant.name, status="active") == 1.0
    assert value(m, "midwatch_runs", tenant=t, state="waiting_approval") == 1.0
    assert value(m, "midwatch_runs", tenant=t, state="escalated") == 1.0
    assert value(m, "midwatch_runs", tenant=t, state="running") == 0.0
    assert value(m, "midwatch_runs_stuck", tenant=t) == 0.0
    assert value(m, "midwatch_queue_depth", tenant=t) == 0.0
    assert value(m, "midwatch_escalations_waiting", tenant=t) == 1.0
    assert 0.0 <= (value(m, "midwatch_escalation_oldest_waiting_seconds", tenant=t) or -1) < 120
    assert value(m, "midwatch_approvals_waiting", tenant=t) == 1.0
    assert value(m, "midwatch_approvals_overdue", tenant=t) == 0.0
    assert value(m, "midwatch_breaker_state", tenant=t, host="crm.example.com") == 2.0
    key = {"tenant": t, "agent": "*", "metric": "runs", "period": "day"}
    limit, used, reserved = (value(m, f"midwatch_budget_{n}", **key) for n in ("limit", "used", "reserved"))
    assert limit == 3.0 and used is not None and reserved is not None and used + reserved == 3.0
    assert value(m, "midwatch_secret_rotation_max_age_seconds", tenant=t, secret="crm_token") == 30 * 86_400.0
    assert 0.0 <= (value(m, "midwatch_secret_age_seconds", tenant=t, secret="crm_token") or -1) < 600
    assert value(m, "midwatch_agent_runs", tenant=t, agent="drafter", outcome="escalated", window="24h") == 1.0
    assert value(m, "midwatch_agent_success_ratio", tenant=t, agent="chaser", window="7d") == 1.0
    assert value(m, "midwatch_agent_success_ratio", tenant=t, agent="drafter", window="24h") == 0.0
    assert value(m, "midwatch_agent_slo_ratio", tenant=t, agent="drafter") == 0.95
    assert value(m, "midwatch_agent_open_incident", tenant=t, agent="drafter") == 1.0
    assert value(m, "midwatch_agent_step_success_ratio", tenant=t, agent="chaser", step="fetch", window="24h") == 1.0
    assert value(m, "midwatch_agent_projected_success_ratio", tenant=t, agent="drafter", window="24h") == 0.0
    assert (value(m, "midwatch_agent_retries", tenant=t, agent="chaser", window="24h") or 0) >= 1, "the 503 retry"
    assert (value(m, "midwatch_workers_alive") or 0) >= 1, "the harness's worker threads publish a heartbeat"
    assert value(m, "midwatch_metrics_snapshot_ok") == 1.0


def test_labels_stay_bounded(progressed: tuple[Harness, Tenant, dict[str, str]], scrape_api: Any) -> None:
    harness, tenant, runs = progressed
    m = scrape_api(harness)
    names = {label for samples in m.values() for labels, _ in samples for label in labels}
    assert names <= BOUNDED_LABELS, names - BOUNDED_LABELS
    values = {v for samples in m.values() for labels, _ in samples for v in labels.values()}
    assert not {v for v in values if ID_LIKE.match(v) or v in runs.values()}, "an id leaked into a label"
    # the registry is the whole test process's: count this tenant's series (other tests' tenants add their own)
    series = sum(1 for samples in m.values() for labels, _ in samples if labels.get("tenant") == tenant.id)
    assert 0 < series < 1500, f"{series} series for one tenant and three agents"


def test_secrets_overdue_and_breakers_reach_status_from_the_same_snapshot(
        progressed: tuple[Harness, Tenant, dict[str, str]]) -> None:
    from tenants.kit.db import read_only
    from tenants.observability.service import status_report, take_snapshot

    _, tenant, _ = progressed
    with read_only() as session:
        now, later = take_snapshot(session), take_snapshot(session, now=utcnow() + timedelta(days=31))
    checks = {(p.check, p.tenant) for p in status_report(now).problems}
    assert ("budgets", tenant.name) in checks and ("breakers", tenant.name) in checks
    assert ("secrets", tenant.name) not in checks and ("escalations", tenant.name) not in checks
    later_checks = {(p.check, p.tenant) for p in status_report(later).problems}
    assert ("secrets", tenant.name) in later_checks, "31 days on, the 30-day policy is overdue"
    assert ("escalations", tenant.name) in later_checks and ("approvals", tenant.name) in later_checks


def _processes_script(db_url: str, data_dir: Path) -> str:
    return textwrap.dedent(f"""
        import os, sys
        os.environ["MIDWATCH_DATA_DIR"] = {str(data_dir)!r}
        os.environ["MIDWATCH_DATABASE_URL"] = {db_url!r}
        from tenants.kit import metrics
        tenant, agent = sys.argv[1], sys.argv[2]
        metrics.run_finished(tenant, agent, "succeeded")
        metrics.step_finished(tenant, agent, ok=False, category="validation", seconds=0.2, retries=1)
    """)


def test_several_api_processes_are_summed_and_the_database_gauges_come_once(
        harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus-client's multiprocess mode: two processes count, a third answers the scrape."""
    from tenants.observability.exposition import prepare_multiprocess_dir

    tenant = harness.onboard()
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"stale from an earlier run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test: this process stays single
    prepare_multiprocess_dir(directory)  # what `midwatch api --workers N` does before starting its processes
    assert not list(directory.glob("*.db")), "an earlier run's counters must not be summed in"
    env = {**os.environ, **harness.env}
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    script = _processes_script(env.get("MIDWATCH_DATABASE_URL", ""), Path(harness.env["MIDWATCH_DATA_DIR"]))
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script, tenant.id, "greeter"], env=env, cwd=ROOT, check=True,
                       timeout=60)
    render = textwrap.dedent("""
        from tenants.kit.settings import get_settings
        from tenants.observability.exposition import render_metrics
        body, _ = render_metrics(get_settings(), database=True)
        print(body.decode())
    """)
    out = subprocess.run([sys.executable, "-c", render], env=env, cwd=ROOT, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    m: Samples = parse(out)
    assert value(m, "midwatch_runs_finished_total", tenant=tenant.id, agent="greeter", state="succeeded") == 2.0
    assert value(m, "midwatch_step_failures_total", tenant=tenant.id, category="validation") == 2.0
    assert value(m, "midwatch_step_attempts_total", tenant=tenant.id) == 4.0
    assert value(m, "midwatch_step_duration_seconds_count", tenant=tenant.id) == 2.0
    for name in ("midwatch_tenant_info", "midwatch_workers_alive", "midwatch_metrics_snapshot_ok"):
        labelsets = [tuple(sorted(labels.items())) for labels, _ in m.get(name, [])]
        assert labelsets and len(labelsets) == len(set(labelsets)), f"{name} exported more than once: {labelsets}"
    assert value(m, "midwatch_tenant_info", tenant=tenant.id) == 1.0
