"""Tenant HTTP tools against the fault-injecting upstream: one test per 3 a.m. fault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runner.errors import StepFailed
from runner.sandbox_upstream import (
    FaultyUpstream,
    burst_503,
    html_200,
    ok,
    rate_limit,
    reset,
    slow,
    status,
    truncated_json,
    unauthorized_until_refresh,
)
from runner.tools.base import ToolCall
from runner.tools.breaker import BreakerConfig, CircuitBreaker, breaker_key
from runner.tools.egress import EgressClient, EgressPolicy
from runner.tools.http import HttpTool
from runner.tools.http_definition import ToolDefinition
from runner.tools.retry import RetryLater
from tenants.kit.logging import register_secret

SECRETS = {"crm_token": "crm-token-value-0001", "crm_client_id": "client-abc",
           "crm_client_secret": "client-secret-value-0002"}
INVOICE = {"amount": 120.5, "email": "a@example.com", "days_overdue": 12}
SCHEMA = {"type": "object", "required": ["amount", "email"],
          "properties": {"amount": {"type": "number"}, "email": {"type": "string"}}}


class Sleeper:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_tool(upstream: FaultyUpstream, *, sleep: Any = None, breaker: CircuitBreaker | None = None,
              clock: Any = None, **overrides: Any) -> HttpTool:
    fields: dict[str, Any] = {"name": "crm.get_invoice", "url": upstream.url + "/invoices/{{ args.id }}",
                              "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05}}
    fields.update(overrides)
    definition = ToolDefinition.model_validate(fields)
    client = EgressClient(EgressPolicy(allowed_hosts=[upstream.netloc], allow_loopback=True))
    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return HttpTool(definition, client, SECRETS.__getitem__, breaker or CircuitBreaker(),
                    breaker_key("acme", definition.host), sleep=sleep or Sleeper(), **extra)


def call(args: Any = None, key: str | None = None) -> ToolCall:
    return ToolCall(tenant_id="acme", run_id="run-1", item_index=0, step_id="fetch",
                    args=args if args is not None else {"id": "inv-1"}, idempotency_key=key)


def decided(tool: HttpTool) -> list[str]:
    return [a.decided for a in tool.attempts]


def test_429_with_retry_after_seconds_is_honoured(upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [rate_limit("1"), ok(INVOICE)])
    import time
    tool = make_tool(upstream, sleep=time.sleep)
    assert tool.call(call()) == INVOICE
    first, second = upstream.requests
    assert second.at - first.at >= 0.95  # measured on the upstream's clock
    assert decided(tool) == ["retry", "ok"]
    assert tool.attempts[0].status == 429 and tool.attempts[0].retry_after_s == 1.0


def test_429_with_an_http_date_retry_after_is_honoured(upstream: FaultyUpstream) -> None:
    # HTTP-dates have one-second resolution: aim at a whole second 1-2 s ahead.
    target = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    upstream.script("/invoices/inv-1", [rate_limit(target), ok(INVOICE)])
    import time
    tool = make_tool(upstream, sleep=time.sleep)
    assert tool.call(call()) == INVOICE
    first, second = upstream.requests
    after = tool.attempts[0].retry_after_s
    assert after is not None and 0.8 <= after <= 2.0
    assert second.at - first.at >= after - 0.05


def test_a_503_burst_is_retried_with_backoff_until_success(upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [burst_503(2), ok(INVOICE)])
    sleeper = Sleeper()
    tool = make_tool(upstream, sleep=sleeper)
    assert tool.call(call()) == INVOICE
    assert len(upstream.requests) == 3 and len(sleeper.calls) == 2
    assert decided(tool) == ["retry", "retry", "ok"]
    assert [a.status for a in tool.attempts[:2]] == [503, 503]
    assert all(0 <= d <= 0.05 for d in sleeper.calls)


def test_an_html_page_with_200_is_a_dependency_failure_with_a_redacted_body_head(
        upstream: FaultyUpstream) -> None:
    register_secret(["leaked-session-value-77"])
    page = "<!doctype html><html><body>Maintenance. debug session=leaked-session-value-77</body></html>"
    upstream.script("/invoices/inv-1", [html_200(page)])
    tool = make_tool(upstream, retry={"max_attempts": 2, "base_delay_s": 0})
    with pytest.raises(StepFailed) as info:
        tool.call(call())
    exc = info.value
    assert exc.category == "dependency"
    assert "expected application/json, got text/html" in exc.reason
    assert "gave up after 2 attempts" in exc.reason
    assert exc.details["body_head"].startswith("<!doctype html>")
    assert "leaked-session-value-77" not in exc.reason + exc.details["body_head"]
    assert "[REDACTED]" in exc.details["body_head"]
    assert [a["decided"] for a in exc.details["attempts"]] == ["retry", "give_up"]


@pytest.mark.parametrize("honest_length", [False, True])
def test_truncated_json_is_a_dependency_failure(upstream: FaultyUpstream, honest_length: bool) -> None:
    upstream.script("/invoices/inv-1", [truncated_json(honest_length=honest_length)])
    with pytest.raises(StepFailed, match=r"truncated|invalid JSON") as info:
        make_tool(upstream, retry={"max_attempts": 1}).call(call())
    assert info.value.category == "dependency"


def test_a_slow_upstream_times_out_and_fails_as_dependency(upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [slow(3)])
    tool = make_tool(upstream, timeout_s=0.3, retry={"max_attempts": 1})
    with pytest.raises(StepFailed, match=r"timeout after 0\.3s") as info:
        tool.call(call())
    assert info.value.category == "dependency" and decided(tool) == ["give_up"]


def test_a_connection_reset_is_retried(upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [reset(), ok(INVOICE)])
    tool = make_tool(upstream)
    assert tool.call(call()) == INVOICE
    assert decided(tool) == ["retry", "ok"] and "connection" in str(tool.attempts[0].error)


def test_a_schema_mismatch_is_a_non_retried_dependency_failure_naming_the_path(
        upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [ok({"amount": "lots", "email": "a@example.com"})])
    with pytest.raises(StepFailed, match=r"schema at \$\.amount") as info:
        make_tool(upstream, response_schema=SCHEMA).call(call())
    assert info.value.category == "dependency" and info.value.details["json_path"] == "$.amount"
    assert len(upstream.requests) == 1


OAUTH = {"type": "oauth2_client_credentials", "token_url": "", "client_id_secret": "crm_client_id",
         "client_secret_secret": "crm_client_secret"}


def test_a_401_on_an_oauth_tool_refreshes_the_token_once_and_succeeds(upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [unauthorized_until_refresh(INVOICE)])
    tool = make_tool(upstream, auth={**OAUTH, "token_url": upstream.url + "/oauth/token"})
    assert tool.call(call()) == INVOICE
    assert upstream.tokens_issued == 2
    calls = upstream.requests_to("/invoices/inv-1")
    assert [r.headers["authorization"] for r in calls] == ["Bearer tok-1", "Bearer tok-2"]
    assert decided(tool) == ["refresh_auth", "ok"]
    token_request = upstream.requests_to("/oauth/token")[0]
    assert token_request.headers["authorization"].startswith("Basic ")
    assert b"grant_type=client_credentials" in token_request.body
    # The refreshed token is cached: the next call needs no token request.
    assert tool.call(call()) == INVOICE and upstream.tokens_issued == 2


def test_a_second_401_is_an_auth_failure_that_names_the_secret_and_escalates(
        upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [status(401, {"error": "invalid_token"})])
    tool = make_tool(upstream, auth={**OAUTH, "token_url": upstream.url + "/oauth/token"})
    with pytest.raises(StepFailed) as info:
        tool.call(call())
    exc = info.value
    assert exc.category == "auth" and exc.action == "escalate"
    assert "secret 'crm_client_secret'" in exc.reason and "after refreshing" in exc.reason
    assert SECRETS["crm_client_secret"] not in exc.reason and "tok-" not in exc.reason
    assert upstream.tokens_issued == 2 and len(upstream.requests_to("/invoices/inv-1")) == 2
    assert decided(tool) == ["refresh_auth", "give_up"]


def test_a_401_with_a_static_bearer_secret_escalates_at_once(upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [status(401)])
    tool = make_tool(upstream, auth={"type": "bearer", "secret": "crm_token"})
    with pytest.raises(StepFailed, match="secret 'crm_token'") as info:
        tool.call(call())
    assert info.value.category == "auth" and info.value.action == "escalate"
    assert upstream.requests[0].headers["authorization"] == "Bearer crm-token-value-0001"
    assert SECRETS["crm_token"] not in info.value.reason


def test_a_non_idempotent_side_effect_is_not_retried_on_503(upstream: FaultyUpstream) -> None:
    upstream.script("/reminders", [burst_503(1), ok({"sent": True})])
    tool = make_tool(upstream, name="mail.send_reminder", method="POST", url=upstream.url + "/reminders",
                     side_effect=True, idempotent=False)
    with pytest.raises(StepFailed, match="outcome unknown") as info:
        tool.call(call({"to": "a@example.com"}, key="run-1/0/send"))
    assert len(upstream.requests) == 1
    assert info.value.category == "dependency" and info.value.action == "escalate"


def test_an_idempotent_side_effect_is_retried_with_the_same_key(upstream: FaultyUpstream) -> None:
    upstream.script("/reminders", [burst_503(2), ok({"sent": True})])
    tool = make_tool(upstream, name="mail.send_reminder", method="POST", url=upstream.url + "/reminders",
                     side_effect=True, idempotent=True, idempotency_header="X-Request-Id")
    assert tool.call(call({"to": "a@example.com"}, key="run-1/0/send")) == {"sent": True}
    assert [r.headers["x-request-id"] for r in upstream.requests] == ["run-1/0/send"] * 3
    assert all(r.json() == {"to": "a@example.com"} for r in upstream.requests)


def test_a_long_retry_after_releases_the_worker(upstream: FaultyUpstream) -> None:
    upstream.script("/invoices/inv-1", [rate_limit("120")])
    sleeper = Sleeper()
    tool = make_tool(upstream, sleep=sleeper)
    with pytest.raises(RetryLater) as info:
        tool.call(call())
    assert info.value.delay_s == 120.0 and info.value.next_attempt == 2
    assert sleeper.calls == [] and len(upstream.requests) == 1
    assert decided(tool) == ["release"]


def test_the_breaker_opens_fails_fast_and_a_half_open_probe_closes_it(upstream: FaultyUpstream) -> None:
    now = [1000.0]
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, window_s=60, open_for_s=30))
    upstream.script("/invoices/inv-1", [burst_503(3), ok(INVOICE)])
    tool = make_tool(upstream, breaker=breaker, clock=lambda: now[0])
    with pytest.raises(StepFailed, match="gave up after 3 attempts"):
        tool.call(call())
    assert len(upstream.requests) == 3
    with pytest.raises(StepFailed, match="circuit open") as info:
        tool.call(call())
    assert len(upstream.requests) == 3  # failed fast, upstream untouched
    assert info.value.details["breaker"] == "open" and info.value.details["breaker_retry_at"] == 1030.0
    now[0] = 1031.0
    assert tool.call(call()) == INVOICE  # the probe
    assert breaker.snapshot(tool._breaker_key, now[0])["state"] == "closed"


def test_url_placeholders_are_encoded_as_single_path_segments(upstream: FaultyUpstream) -> None:
    tool = make_tool(upstream)
    tool.call(call({"id": "../admin?x=1"}))
    assert upstream.requests[0].path == "/invoices/..%2Fadmin%3Fx%3D1"
    with pytest.raises(StepFailed, match="not a path segment") as info:
        tool.call(call({"id": ".."}))
    assert info.value.category == "validation"


def test_definitions_refuse_templated_hosts_and_credential_headers() -> None:
    with pytest.raises(ValueError, match="host must be literal"):
        ToolDefinition(name="crm.x", url="https://{{ args.host }}/x")
    with pytest.raises(ValueError, match="credentials go in auth"):
        ToolDefinition(name="crm.x", url="https://api.example.com/x", headers={"Authorization": "Bearer x"})
