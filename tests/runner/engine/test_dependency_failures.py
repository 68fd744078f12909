"""Runs against a fault-injecting upstream: each fault's retry / backoff / breaker / validation decision
is visible in the run's events, and the run ends succeeded or escalated with a clear reason."""

from __future__ import annotations

from typing import Any

import pytest

from runner.sandbox_upstream import FaultyUpstream, burst_503, html_200, ok, rate_limit, reset, slow, truncated_json
from tests.conftest import Harness, Tenant, spec

INVOICE = {"amount": 120, "email": "billing@example.com"}


def _setup(h: Harness, up: FaultyUpstream, *, tool: dict[str, Any] | None = None,
           step_extra: str = "") -> Tenant:
    tenant = h.onboard()
    definition = {"method": "GET", "url": f"{up.url}/crm/invoices/{{{{ args.id }}}}", "timeout_s": 2,
                  "retry": {"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2},
                  "response_schema": {"type": "object", "required": ["amount", "email"]}, **(tool or {})}
    r = h.client.put("/v1/tools/crm.get_invoice", json=definition, headers=tenant.headers)
    assert r.status_code == 201, r.text
    spec = f"""\
apiVersion: midwatch/v1
name: chaser
scope: {{tools: [crm.get_invoice], egress: ["{up.netloc}"]}}
steps:
  - id: fetch
    tool: crm.get_invoice
    args: {{id: "{{{{ input.id }}}}"}}
{step_extra}"""
    h.put_agent(tenant, spec)
    return tenant


def _run(h: Harness, tenant: Tenant, timeout: float = 60) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run = h.submit(tenant, "chaser", {"input": {"id": "INV-1"}})
    done = h.wait_run(tenant, run["id"], timeout=timeout)
    return done, h.events(tenant, run["id"])


def _attempts(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in event["verdicts"] or [] if v.get("check") == "attempt" or "decided" in v]


def test_a_429_with_retry_after_is_honoured_then_the_run_succeeds(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [rate_limit("1"), ok(INVOICE)])
    tenant = _setup(harness, upstream)
    done, events = _run(harness, tenant)
    assert done["state"] == "succeeded", done
    step = next(e for e in events if e["kind"] == "step.succeeded")
    attempts = _attempts(step)
    assert [(a["status"], a["decided"]) for a in attempts] == [(429, "retry"), (None, "ok")]
    assert attempts[0]["retry_after_s"] == 1.0
    first, second = upstream.requests_to("/crm/invoices/INV-1")
    assert second.at - first.at >= 0.95, "Retry-After: 1 was not honoured"


def test_a_long_retry_after_releases_the_worker_and_resumes_later(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [rate_limit("6"), ok(INVOICE)])
    tenant = _setup(harness, upstream)
    done, events = _run(harness, tenant, timeout=60)
    assert done["state"] == "succeeded", done
    deferred = [e for e in events if e["kind"] == "step.deferred"]
    assert len(deferred) == 1 and "6.0s" in deferred[0]["chosen"]
    assert [e["kind"] for e in events].count("run.resumed") == 1
    first, second = upstream.requests_to("/crm/invoices/INV-1")
    assert second.at - first.at >= 5.9


def test_a_503_burst_is_retried_with_backoff(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [burst_503(2), ok(INVOICE)])
    tenant = _setup(harness, upstream)
    done, events = _run(harness, tenant)
    assert done["state"] == "succeeded"
    step = next(e for e in events if e["kind"] == "step.succeeded")
    assert [a["status"] for a in _attempts(step)] == [503, 503, None]
    assert [a["decided"] for a in _attempts(step)] == ["retry", "retry", "ok"]


@pytest.mark.parametrize(("fault", "needle"), [
    (html_200(), "text/html"),
    (truncated_json(), "truncated"),
    (truncated_json(honest_length=True), "JSON"),
    (ok({"unexpected": True}), "schema"),
])
def test_a_bad_response_is_a_dependency_failure_never_passed_on(harness: Harness, upstream: FaultyUpstream,
                                                                fault: Any, needle: str) -> None:
    upstream.script("/crm/invoices/INV-1", [fault])
    tenant = _setup(harness, upstream, tool={"retry": {"max_attempts": 1}})
    done, events = _run(harness, tenant)
    assert done["state"] == "escalated", done
    assert done["failure_category"] == "dependency"
    failed = next(e for e in events if e["kind"] == "step.failed")
    assert needle.lower() in failed["why"].lower()
    assert not [e for e in events if e["kind"] == "step.succeeded"], "a bad response reached the next step"


def test_an_html_page_shows_its_first_bytes_in_the_decision_log(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [html_200("<!doctype html><title>Maintenance</title>")])
    tenant = _setup(harness, upstream, tool={"retry": {"max_attempts": 1}})
    _, events = _run(harness, tenant)
    failed = next(e for e in events if e["kind"] == "step.failed")
    assert "Maintenance" in str(failed["verdicts"]) + failed["why"]


def test_a_slow_upstream_times_out_and_escalates(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [slow(5)])
    tenant = _setup(harness, upstream, tool={"timeout_s": 0.3, "retry": {"max_attempts": 2, "base_delay_s": 0.05}})
    done, _ = _run(harness, tenant)
    assert done["state"] == "escalated", done
    assert "timed out" in done["reason"].lower() or "timeout" in done["reason"].lower()


def test_a_connection_reset_is_retried(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [reset(), ok(INVOICE)])
    tenant = _setup(harness, upstream)
    done, _ = _run(harness, tenant)
    assert done["state"] == "succeeded", done


def test_skip_item_degrades_gracefully(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [html_200()])
    tenant = _setup(harness, upstream, tool={"retry": {"max_attempts": 1}},
                    step_extra="    on_dependency_failure: skip_item\n")
    done, _ = _run(harness, tenant)
    assert done["state"] == "succeeded" and done["items_done"] == 1
    items = harness.client.get(f"/v1/runs/{done['id']}/items", headers=tenant.headers).json()["data"]
    assert items[0]["state"] == "skipped" and "skip_item" in items[0]["reason"]


def test_the_breaker_opens_after_repeated_failures_and_fails_fast(harness: Harness,
                                                                   upstream: FaultyUpstream) -> None:
    upstream.script("/crm/invoices/INV-1", [burst_503(100)])
    tenant = _setup(harness, upstream, tool={"retry": {"max_attempts": 1}},
                    step_extra="    on_dependency_failure: escalate\n")
    for _ in range(5):
        done, _ = _run(harness, tenant)
        assert done["state"] == "escalated"
    seen = len(upstream.requests_to("/crm/invoices/INV-1"))
    done, _ = _run(harness, tenant)
    assert done["state"] == "escalated" and "open" in done["reason"].lower()
    assert len(upstream.requests_to("/crm/invoices/INV-1")) == seen, "an open breaker still called the upstream"
    breakers = harness.client.get("/v1/breakers", headers=tenant.headers).json()["data"]
    assert breakers[0]["host"] == upstream.netloc and breakers[0]["state"] == "open"


def test_egress_outside_scope_is_blocked(harness: Harness, upstream: FaultyUpstream) -> None:
    tenant = harness.onboard()
    r = harness.client.put("/v1/tools/crm.get_invoice", headers=tenant.headers,
                           json={"method": "GET", "url": "http://169.254.169.254/latest/meta-data"})
    assert r.status_code == 422 and "cloud metadata" in r.text, r.text  # refused at upload...
    from tenants.catalog.service import put_tool
    from tenants.kit.db import unit_of_work

    with unit_of_work() as session:  # ...and at call time, for a tool stored before that check existed
        put_tool(session, tenant.id, "crm.get_invoice", {"name": "crm.get_invoice", "method": "GET",
                                                         "url": "http://169.254.169.254/latest/meta-data"})
    harness.put_agent(tenant, """\
apiVersion: midwatch/v1
name: chaser
scope: {tools: [crm.get_invoice], egress: ["169.254.169.254"]}
steps:
  - id: fetch
    tool: crm.get_invoice
""")
    done, _ = _run(harness, tenant)
    assert done["state"] == "failed" and done["failure_category"] == "scope", done
    violations = harness.client.get("/v1/security/violations", headers=tenant.headers).json()["data"]
    assert [(v["kind"], v["target"]) for v in violations] == [("host", "169.254.169.254")], violations


def _oauth_setup(h: Harness, up: FaultyUpstream) -> Tenant:
    tenant = h.onboard()
    for name, value in (("crm_client_id", "client-abc"), ("crm_client_secret", "s3cret-client-value")):
        assert h.client.post("/v1/secrets", json={"name": name, "value": value},
                             headers=tenant.headers).status_code == 201
    r = h.client.put("/v1/tools/crm.get_invoice", headers=tenant.headers, json={
        "method": "GET", "url": f"{up.url}/crm/invoices/{{{{ args.id }}}}", "retry": {"max_attempts": 2},
        "auth": {"type": "oauth2_client_credentials", "token_url": f"{up.url}/oauth/token",
                 "client_id_secret": "crm_client_id", "client_secret_secret": "crm_client_secret"}})
    assert r.status_code == 201, r.text
    h.put_agent(tenant, f"""\
apiVersion: midwatch/v1
name: chaser
scope: {{tools: [crm.get_invoice], egress: ["{up.netloc}"], secrets: [crm_client_id, crm_client_secret]}}
steps:
  - id: fetch
    tool: crm.get_invoice
    args: {{id: "{{{{ input.id }}}}"}}
""")
    return tenant


def test_a_401_refreshes_the_oauth_token_once_and_succeeds(harness: Harness, upstream: FaultyUpstream) -> None:
    from runner.sandbox_upstream import unauthorized_until_refresh

    upstream.script("/crm/invoices/INV-1", [unauthorized_until_refresh(INVOICE)])
    tenant = _oauth_setup(harness, upstream)
    done, events = _run(harness, tenant)
    assert done["state"] == "succeeded", done
    assert upstream.tokens_issued == 2, "the token was not refreshed exactly once"
    step = next(e for e in events if e["kind"] == "step.succeeded")
    assert [a["decided"] for a in _attempts(step)] == ["refresh_auth", "ok"]


def test_a_second_401_is_an_auth_failure_naming_the_secret_not_its_value(harness: Harness,
                                                                        upstream: FaultyUpstream) -> None:
    from runner.sandbox_upstream import status

    upstream.script("/crm/invoices/INV-1", [status(401, {"error": "invalid_token"})])
    tenant = _oauth_setup(harness, upstream)
    done, events = _run(harness, tenant)
    assert done["state"] == "escalated" and done["failure_category"] == "auth", done
    assert "crm_client_secret" in done["reason"] and "s3cret-client-value" not in str(events) + done["reason"]


def test_a_failing_model_falls_back_to_the_next_in_the_chain(harness: Harness, upstream: FaultyUpstream) -> None:
    from runner.sandbox_upstream import burst_503

    upstream.script("/v1/chat/completions", [burst_503(100)])
    tenant = harness.onboard()
    assert harness.client.post("/v1/secrets", json={"name": "llm_key", "value": "sk-test-987654"},
                               headers=tenant.headers).status_code == 201
    r = harness.client.put("/v1/models/careful", headers=tenant.headers, json={
        "provider": "openai", "base_url": f"{upstream.url}/v1", "model": "gpt-test", "api_key_secret": "llm_key",
        "retry": {"max_attempts": 2, "base_delay_s": 0.05, "max_delay_s": 0.1}})
    assert r.status_code == 201, r.text
    harness.put_agent(tenant, f"""\
apiVersion: midwatch/v1
name: drafter
scope: {{tools: [sandbox.echo], egress: ["{upstream.netloc}"], secrets: [llm_key]}}
steps:
  - id: draft
    llm: {{model: careful, fallbacks: [sandbox], prompt: "Write a reminder"}}
""")
    run = harness.submit(tenant, "drafter", {"input": None})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "succeeded", done
    step = next(e for e in harness.events(tenant, run["id"]) if e["kind"] == "step.succeeded")
    assert step["considered"] == ["careful", "sandbox"] and step["chosen"] == "sandbox"
    assert "1 fallback" in step["why"]
    failed_call = next(v for v in step["verdicts"] if v.get("check") == "model_call" and v.get("ok") is False)
    assert failed_call["model"] == "careful" and failed_call["category"] == "dependency"


def test_a_step_timeout_bounds_the_http_call_below_the_tools_own_timeout(harness: Harness,
                                                                        upstream: FaultyUpstream) -> None:
    """The tool would wait 2 s per attempt and retry; the step's timeout_s=0.5 cuts the first request at
    0.5 s and leaves no time for another: one request, the step fails as dependency naming its timeout."""
    upstream.script("/crm/invoices/INV-1", [slow(3, times=5)])
    tenant = _setup(harness, upstream, step_extra="    timeout_s: 0.5\n    on_dependency_failure: fail\n")
    done, events = _run(harness, tenant)
    assert done["state"] == "failed", done
    failed = next(e for e in events if e["kind"] == "step.failed")
    assert failed["failure_category"] == "dependency"
    assert "exceeded its timeout_s=0.5" in failed["why"], failed["why"]
    assert len(upstream.requests_to("/crm/invoices/INV-1")) == 1


def test_sandbox_sleep_honours_the_step_timeout(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, spec("sleeper", {"id": "nap", "tool": "sandbox.sleep", "args": {"seconds": 30},
                                               "timeout_s": 0.3, "on_dependency_failure": "fail"}))
    run = harness.submit(tenant, "sleeper", {"input": {}})
    done = harness.wait_run(tenant, run["id"], timeout=20)
    assert done["state"] == "failed" and done["failure_category"] == "dependency", done
    assert "step 'nap' exceeded its timeout_s=0.3" in done["reason"], done["reason"]
    nap = next(e for e in harness.events(tenant, run["id"]) if e["kind"] == "step.failed")
    assert nap["latency_ms"] < 5_000
