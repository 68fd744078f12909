"""Webhooks: signed deliveries a receiver can verify, retried on 5xx, failed on 4xx, refused outside the
egress policy, logged in the API, and never sent for a rolled-back transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok, status
from runner.webhooks import MAX_ATTEMPTS, deliver_due
from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.settings import get_settings
from tenants.webhooks import service
from tenants.webhooks.signing import verify_signature
from tests.conftest import Harness, Tenant, spec


def _register(h: Harness, tenant: Tenant, url: str, events: list[str] | None = None) -> dict[str, Any]:
    r = h.client.post("/v1/webhooks", json={"url": url, "events": events or ["run.failed"]}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _emit(tenant: Tenant, event: str = "run.failed", **payload: Any) -> list[str]:
    with unit_of_work() as session:
        return service.emit(session, tenant.id, event, payload or {"run_id": "run_1", "state": "failed"})


def _settle_earlier_deliveries() -> None:
    """Deliver (or push far into the future) whatever earlier tests left pending in a shared database."""
    far = utcnow() + timedelta(days=30)
    while deliver_due(get_settings(), far):
        pass


def _log(h: Harness, tenant: Tenant, hook_id: str) -> list[dict[str, Any]]:
    r = h.client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_delivery_is_signed_and_the_receiver_can_verify_it(make_harness: Callable[..., Harness],
                                                           upstream: FaultyUpstream, db: str) -> None:
    h = make_harness(db=db, worker=None)
    _settle_earlier_deliveries()  # the PostgreSQL schema is shared by the session's earlier tests
    tenant = h.onboard()
    hook = _register(h, tenant, upstream.url + "/hook", ["run.failed", "run.escalated"])
    assert hook["secret"].startswith("whsec_")
    listed = h.client.get("/v1/webhooks", headers=tenant.headers).text
    assert hook["id"] in listed and hook["secret"] not in listed  # the secret is shown once

    ids = _emit(tenant, "run.failed", run_id="run_1", state="failed", reason="boom", api_token="tok-123456")
    assert _emit(tenant, "budget.threshold", percent=80) == []  # not subscribed
    assert deliver_due(get_settings()) == 1

    [req] = upstream.requests_to("/hook")
    headers = req.headers
    assert headers["midwatch-event"] == "run.failed" and headers["midwatch-delivery"] == ids[0]
    assert verify_signature(hook["secret"], headers["midwatch-timestamp"], req.body, headers["midwatch-signature"])
    assert not verify_signature("whsec_wrong", headers["midwatch-timestamp"], req.body,
                                headers["midwatch-signature"])
    assert not verify_signature(hook["secret"], headers["midwatch-timestamp"], req.body + b" ",
                                headers["midwatch-signature"])
    assert not verify_signature(hook["secret"], headers["midwatch-timestamp"], req.body,
                                headers["midwatch-signature"], now=int(headers["midwatch-timestamp"]) + 301)
    body = req.json()
    assert body["type"] == "run.failed" and body["id"] == ids[0] and body["tenant_id"] == tenant.id
    assert body["data"]["run_id"] == "run_1" and "tok-123456" not in req.body.decode()

    [entry] = _log(h, tenant, hook["id"])
    assert (entry["state"], entry["attempts"], entry["last_status"]) == ("delivered", 1, 200)
    assert entry["delivered_at"] is not None
    assert deliver_due(get_settings(), utcnow() + timedelta(days=1)) == 0  # delivered once, never again

    # the test endpoint sends a webhook.test event to that endpoint
    assert h.client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers).status_code == 202
    deliver_due(get_settings())
    assert upstream.requests_to("/hook")[-1].headers["midwatch-event"] == "webhook.test"


def test_5xx_is_retried_with_backoff_then_delivered(harness: Harness, upstream: FaultyUpstream) -> None:
    tenant = harness.onboard()
    upstream.script("/flaky", [status(503, times=2), ok()])
    hook = _register(harness, tenant, upstream.url + "/flaky")
    _emit(tenant)
    settings = get_settings()
    assert deliver_due(settings) == 1
    [entry] = _log(harness, tenant, hook["id"])
    assert (entry["state"], entry["attempts"], entry["last_status"]) == ("pending", 1, 503)
    assert entry["next_attempt_at"] > entry["last_attempt_at"]
    assert deliver_due(settings) == 0  # backing off: not due yet
    later = utcnow() + timedelta(hours=1)
    assert deliver_due(settings, later) == 1
    assert deliver_due(settings, later + timedelta(hours=1)) == 1
    [entry] = _log(harness, tenant, hook["id"])
    assert (entry["state"], entry["attempts"], entry["last_status"]) == ("delivered", 3, 200)
    assert len(upstream.requests_to("/flaky")) == 3
    ids = {r.headers["midwatch-delivery"] for r in upstream.requests_to("/flaky")}
    assert len(ids) == 1  # the same delivery id on every attempt: receivers de-duplicate on it


def test_4xx_fails_at_once_and_5xx_gives_up_after_the_attempt_cap(harness: Harness,
                                                                   upstream: FaultyUpstream) -> None:
    tenant = harness.onboard()
    upstream.script("/gone", [status(410)])
    upstream.script("/down", [status(500)])
    gone = _register(harness, tenant, upstream.url + "/gone")
    down = _register(harness, tenant, upstream.url + "/down")
    _emit(tenant)
    settings = get_settings()
    when = utcnow()
    for _ in range(MAX_ATTEMPTS + 2):
        deliver_due(settings, when)
        when += timedelta(hours=2)
    [g] = _log(harness, tenant, gone["id"])
    assert (g["state"], g["attempts"], g["last_status"]) == ("failed", 1, 410)
    assert "HTTP 410" in g["last_error"]
    [d] = _log(harness, tenant, down["id"])
    assert (d["state"], d["attempts"], d["last_status"]) == ("failed", MAX_ATTEMPTS, 500)
    assert len(upstream.requests_to("/down")) == MAX_ATTEMPTS


def test_endpoints_outside_the_egress_policy_are_refused_at_registration_and_at_send(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream) -> None:
    h = make_harness(worker=None, extra={"MIDWATCH_ALLOW_LOOPBACK_EGRESS": "false"})
    tenant = h.onboard()
    for url in (upstream.url + "/hook", "http://10.0.0.5/hook", "http://169.254.169.254/latest",
                "http://localhost:8080/x", "ftp://example.com/x", "http://user:pw@example.com/x"):
        r = h.client.post("/v1/webhooks", json={"url": url, "events": ["run.failed"]}, headers=tenant.headers)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (url, r.text)
    r = h.client.post("/v1/webhooks", json={"url": "https://example.com/x", "events": ["nope"]},
                      headers=tenant.headers)
    assert r.status_code == 422 and "nope" in r.text

    # a name that resolves to loopback passes registration; the egress client refuses it at send time
    with unit_of_work() as session:
        endpoint, _ = service.create_endpoint(session, tenant.id, f"http://hooks.example.com:{upstream.port}/h",
                                              ["run.failed"], allow_loopback=True)
    _emit(tenant)
    assert deliver_due(get_settings(), resolver=lambda host, port: ["127.0.0.1"]) == 1
    [entry] = _log(h, tenant, endpoint.id)
    assert entry["state"] == "failed" and "egress blocked" in entry["last_error"]
    assert upstream.requests == []


def test_an_event_emitted_in_a_rolled_back_transaction_is_never_sent(harness: Harness,
                                                                     upstream: FaultyUpstream) -> None:
    tenant = harness.onboard()
    hook = _register(harness, tenant, upstream.url + "/hook")
    with pytest.raises(RuntimeError), unit_of_work() as session:
        assert len(service.emit(session, tenant.id, "run.failed", {"run_id": "run_x"})) == 1
        raise RuntimeError("the run step failed to commit")
    assert deliver_due(get_settings(), utcnow() + timedelta(days=1)) == 0
    assert _log(harness, tenant, hook["id"]) == [] and upstream.requests == []


def test_deleted_endpoint_gets_nothing_and_its_pending_deliveries_fail(harness: Harness,
                                                                       upstream: FaultyUpstream) -> None:
    tenant = harness.onboard()
    hook = _register(harness, tenant, upstream.url + "/hook")
    _emit(tenant)
    assert harness.client.delete(f"/v1/webhooks/{hook['id']}", headers=tenant.headers).status_code == 204
    assert harness.client.delete(f"/v1/webhooks/{hook['id']}", headers=tenant.headers).status_code == 404
    assert _emit(tenant) == []
    assert deliver_due(get_settings()) == 0 and upstream.requests == []
    actions = [e["action"] for e in harness.client.get("/v1/audit", headers=tenant.headers).json()["data"]]
    assert actions == ["webhook.created", "webhook.deleted"]


def test_a_failed_run_sends_a_run_failed_webhook(harness: Harness, upstream: FaultyUpstream) -> None:
    tenant = harness.onboard()
    hook = _register(harness, tenant, upstream.url + "/hook", ["run.failed", "run.escalated"])
    assert harness.client.put("/v1/tools/crm.get_invoice", headers=tenant.headers,
                              json={"method": "GET", "url": "http://127.0.0.1:9/latest"}).status_code == 201
    harness.put_agent(tenant, spec("chaser", {"id": "fetch", "tool": "crm.get_invoice"}))
    run = harness.submit(tenant, "chaser", {"input": {}})
    assert harness.wait_run(tenant, run["id"])["state"] == "failed"
    assert deliver_due(get_settings()) == 1
    [req] = upstream.requests_to("/hook")
    data = req.json()["data"]
    assert req.json()["type"] == "run.failed" and data["run_id"] == run["id"] and data["agent"] == "chaser"
    assert data["failure_category"] == "scope" and data["state"] == "failed" and data["reason"]
    assert _log(harness, tenant, hook["id"])[0]["state"] == "delivered"
