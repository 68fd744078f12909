"""The scheduler's housekeeping: rotation-due and budget-threshold events reach the tenant's webhooks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.conftest import Harness, Tenant


def _hook(h: Harness, tenant: Tenant, events: list[str]) -> str:
    r = h.client.post("/v1/webhooks", json={"url": "https://hooks.example.com/midwatch", "events": events},
                      headers=tenant.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _deliveries(h: Harness, tenant: Tenant, hook: str) -> list[dict[str, Any]]:
    return list(h.client.get(f"/v1/webhooks/{hook}/deliveries", headers=tenant.headers).json()["data"])


def test_an_overdue_secret_raises_rotation_due_once_a_day(harness: Harness) -> None:
    from sqlalchemy import update

    from runner.sweeper import maintain
    from tenants.kit.db import unit_of_work
    from tenants.kit.ids import utcnow
    from tenants.secrets.models import Secret

    tenant = harness.onboard()
    hook = _hook(harness, tenant, ["secret.rotation_due"])
    r = harness.client.post("/v1/secrets", json={"name": "crm_token", "value": "tok-abcdef-123", "max_age_days": 30},
                            headers=tenant.headers)
    assert r.status_code == 201, r.text
    with unit_of_work() as session:
        old = utcnow() - timedelta(days=45)
        session.execute(update(Secret).where(Secret.tenant_id == tenant.id)
                        .values(created_at=old, last_rotated_at=old))
    announced: set[tuple[str, str, str]] = set()
    assert maintain(utcnow(), announced)["rotation_due"] >= 1
    assert maintain(utcnow(), announced)["rotation_due"] == 0, "announced twice on the same day"
    sent = _deliveries(harness, tenant, hook)
    assert [d["event_type"] for d in sent] == ["secret.rotation_due"]


def test_budget_thresholds_become_webhook_events(harness: Harness) -> None:
    tenant = harness.onboard()
    hook = _hook(harness, tenant, ["budget.threshold"])
    harness.put_agent(tenant, """\
apiVersion: midwatch/v1
name: chatty
scope: {tools: [sandbox.echo]}
steps:
  - {id: one, llm: {model: sandbox, prompt: "hi"}}
""")
    r = harness.client.put(f"/v1/admin/tenants/{tenant.name}/budgets", headers=harness.op_headers,
                           json=[{"metric": "llm_calls", "limit": 2, "period": "day"}])
    assert r.status_code == 200, r.text
    for _ in range(2):
        run = harness.submit(tenant, "chatty", {"input": None})
        assert harness.wait_run(tenant, run["id"])["state"] == "succeeded"
    sent = _deliveries(harness, tenant, hook)
    assert sorted(d["event_type"] for d in sent) == ["budget.threshold"] * 3  # 50 %, 80 %, 100 %
