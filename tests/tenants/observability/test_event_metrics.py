"""The event metrics' small API keeps labels bounded whatever it is handed, and the database gauges are read
at most once per refresh interval, keep the last good figures when the database fails, and say so."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from tenants.kit import metrics
from tenants.observability.exposition import SnapshotCache, snapshot_families
from tenants.observability.service import Snapshot
from tests.tenants.observability.conftest import parse, value


def _scrape() -> Any:
    return parse(generate_latest(REGISTRY).decode())


def test_a_step_outcome_counts_its_attempts_retries_failure_and_duration() -> None:
    before = _scrape()
    metrics.step_finished("tnt_api", "greeter", ok=False, category="validation", seconds=0.3, retries=2)
    metrics.step_finished("tnt_api", "greeter", ok=True, seconds=0.1)
    after = _scrape()

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0.0) - (value(before, name, **labels) or 0.0)

    assert grew("midwatch_steps_total", tenant="tnt_api", agent="greeter", outcome="failed") == 1
    assert grew("midwatch_steps_total", tenant="tnt_api", agent="greeter", outcome="succeeded") == 1
    assert grew("midwatch_step_attempts_total", tenant="tnt_api", agent="greeter") == 4
    assert grew("midwatch_step_retries_total", tenant="tnt_api", agent="greeter") == 2
    assert grew("midwatch_step_failures_total", tenant="tnt_api", agent="greeter", category="validation") == 1
    assert grew("midwatch_step_duration_seconds_count", tenant="tnt_api", agent="greeter") == 2
    assert grew("midwatch_step_duration_seconds_sum", tenant="tnt_api", agent="greeter") == pytest.approx(0.4)


def test_unknown_states_categories_and_providers_collapse_into_bounded_values() -> None:
    metrics.run_finished("tnt_bound", "a", "exploded", "made-up-category")
    metrics.model_call("tnt_bound", "a", provider="some-new-llm", ok=True, input_tokens=5, output_tokens=2,
                       cost_usd=0.5)
    metrics.webhook_attempt("tnt_bound", "run.failed", "weird")
    m = _scrape()
    assert value(m, "midwatch_runs_finished_total", tenant="tnt_bound", state="other", category="internal") == 1
    assert value(m, "midwatch_model_calls_total", tenant="tnt_bound", provider="other", outcome="ok") == 1
    assert value(m, "midwatch_model_tokens_total", tenant="tnt_bound", direction="input") == 5
    assert value(m, "midwatch_model_cost_usd_total", tenant="tnt_bound") == 0.5
    assert value(m, "midwatch_webhook_deliveries_total", tenant="tnt_bound", outcome="failed") == 1


def _snapshot(tag: str) -> Snapshot:
    return Snapshot(taken_at=datetime.now(UTC), tenants={"t": (tag, "active")}, runs={}, queued={}, escalated={},
                    approvals={}, approvals_overdue={}, breakers=(), budgets=(), secrets=(), webhooks={}, agents={},
                    heartbeats=())


def test_the_database_is_read_at_most_once_per_refresh_interval_and_failures_keep_the_last_figures() -> None:
    now = [100.0]
    reads: list[bool] = []
    fail = [False]

    def reader(previous: Snapshot | None, with_reliability: bool) -> Snapshot:
        reads.append(with_reliability)
        if fail[0]:
            raise ConnectionError("database down")
        return _snapshot(f"read-{len(reads)}")

    cache = SnapshotCache(15.0, reader=reader, clock=lambda: now[0])
    first = cache.get()
    assert first is not None and cache.ok
    for _ in range(5):  # scrapes within the interval: no database round trip
        now[0] += 2
        assert cache.get() is first
    assert len(reads) == 1
    now[0] += 10
    second = cache.get()
    assert second is not first and len(reads) == 2
    assert reads == [True, False], "the slower reliability figures are refreshed every 4th snapshot only"
    fail[0] = True
    now[0] += 20
    assert cache.get() is second and not cache.ok, "a failed refresh serves the last good snapshot"
    families = {f.name: f for f in snapshot_families(cache.get(), ok=cache.ok, duration_s=cache.duration_s)}
    assert families["midwatch_metrics_snapshot_ok"].samples[0].value == 0.0
    assert families["midwatch_tenant_info"].samples[0].labels["tenant_name"] == "read-2"


def test_a_metric_counted_after_commit_is_not_counted_when_the_transaction_rolls_back(harness: Any) -> None:
    from tenants.kit.db import call_after_commit, unit_of_work

    calls: list[str] = []
    with unit_of_work() as session:
        call_after_commit(session, lambda: calls.append("committed"))
        assert calls == []
    assert calls == ["committed"]
    with pytest.raises(RuntimeError), unit_of_work() as session:
        call_after_commit(session, lambda: calls.append("rolled back"))
        raise RuntimeError("the transaction fails")
    with unit_of_work():
        pass
    assert calls == ["committed"]


def test_an_expired_approval_is_counted_once_for_its_tenant(harness: Any) -> None:
    import time

    from runner.sweeper import sweep_once
    from tenants.kit.settings import get_settings

    tenant = harness.onboard()
    harness.put_agent(tenant, """\
apiVersion: midwatch/v1
name: payer
scope: {tools: [sandbox.echo, sandbox.record]}
autonomy:
  approvals:
    - {when: "step.tool == 'sandbox.record'", route: approver, timeout_s: 1}
steps:
  - {id: pay, tool: sandbox.record, args: {amount: 5000}}
""")
    run = harness.submit(tenant, "payer", {"input": {}})
    harness.wait_run(tenant, run["id"], states=("waiting_approval",))
    time.sleep(1.2)
    sweep_once(get_settings())
    sweep_once(get_settings())  # nothing more to expire
    assert value(_scrape(), "midwatch_approvals_expired_total", tenant=tenant.id) == 1.0


def test_a_failing_webhook_receiver_shows_in_the_counters_the_gauges_and_status(harness: Any, upstream: Any,
                                                                              scrape_api: Any) -> None:
    from runner.sandbox_upstream import status
    from runner.webhooks import deliver_due
    from tenants.kit.db import read_only, unit_of_work
    from tenants.kit.settings import get_settings
    from tenants.observability.service import status_report, take_snapshot
    from tenants.webhooks import service

    tenant = harness.onboard()
    upstream.script("/hook", [status(503, times=5)])
    r = harness.client.post("/v1/webhooks", json={"url": upstream.url + "/hook", "events": ["run.failed"]},
                            headers=tenant.headers)
    assert r.status_code == 201, r.text
    with unit_of_work() as session:
        service.emit(session, tenant.id, "run.failed", {"run_id": "run_1", "state": "failed"})
    assert deliver_due(get_settings()) == 1
    m = scrape_api(harness)
    assert value(m, "midwatch_webhook_deliveries_total", tenant=tenant.id, event_type="run.failed",
                 outcome="retry") == 1.0
    assert value(m, "midwatch_webhook_deliveries_retrying", tenant=tenant.id) == 1.0
    assert value(m, "midwatch_webhook_deliveries_pending", tenant=tenant.id) == 1.0
    with read_only() as session:
        report = status_report(take_snapshot(session))
    assert [(p.check, p.tenant) for p in report.problems if p.check == "webhooks"] == [("webhooks", tenant.name)]
