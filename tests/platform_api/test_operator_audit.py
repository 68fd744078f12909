"""Every security- or money-relevant operator action is audited with who, when and what changed (issue 16,
finding 6): budgets, suspension, onboarding (API and CLI), operator key rotation, master key rotation."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import hash_key
from tenants.kit.db import unit_of_work
from tests.conftest import Harness


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness(worker=None)


def _operator_key_id(h: Harness) -> str:
    with unit_of_work() as session:
        key = AccountsPlatformRepository(session).key_by_hash(hash_key(h.operator_key))
        assert key is not None
        return key.id


def _platform_events(h: Harness, action: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = h.client.get(f"/v1/admin/audit?action={action}", headers=headers or h.op_headers)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_a_budget_change_is_audited_with_the_operator_the_time_and_the_limits_before_and_after(
        harness: Harness) -> None:
    tenant = harness.onboard()
    url = f"/v1/admin/tenants/{tenant.name}/budgets"
    first = [{"metric": "cost_usd", "limit": "10", "period": "month"}]
    second = [{"metric": "cost_usd", "limit": "2500.50", "period": "month"}, {"metric": "concurrent_runs", "limit": 3}]
    before_call = datetime.now(UTC) - timedelta(seconds=1)
    assert harness.client.put(url, json=first, headers=harness.op_headers).status_code == 200
    assert harness.client.put(url, json=second, headers=harness.op_headers).status_code == 200

    events = _platform_events(harness, "tenant.budgets_set")
    assert len(events) == 2
    latest = events[-1]
    assert latest["actor"] == _operator_key_id(harness) and latest["actor_role"] == "operator"
    assert latest["target"] == tenant.id and latest["details"]["name"] == tenant.name
    assert datetime.fromisoformat(latest["at"].replace("Z", "+00:00")) >= before_call
    assert [(x["metric"], x["limit"]) for x in latest["details"]["before"]] == [("cost_usd", "10")]
    assert sorted((x["metric"], x["limit"]) for x in latest["details"]["after"]) == [
        ("concurrent_runs", "3"), ("cost_usd", "2500.5")]
    assert events[0]["details"]["before"] == []
    assert harness.client.get("/v1/admin/audit/verify", headers=harness.op_headers).json()["ok"] is True
    # the tenant cannot rewrite its own limits, and a refused change leaves no record
    assert harness.client.put(url, json=first, headers=tenant.headers).status_code == 403
    assert len(_platform_events(harness, "tenant.budgets_set")) == 2


def test_suspend_resume_and_operator_key_rotation_record_before_and_after(harness: Harness) -> None:
    tenant = harness.onboard()
    assert harness.client.post(f"/v1/admin/tenants/{tenant.name}/suspend", headers=harness.op_headers).status_code \
        == 201
    assert harness.client.post(f"/v1/admin/tenants/{tenant.name}/resume", headers=harness.op_headers).status_code \
        == 201
    [suspended] = _platform_events(harness, "tenant.suspended")
    [resumed] = _platform_events(harness, "tenant.resumed")
    assert (suspended["details"]["before"], suspended["details"]["after"]) == ({"status": "active"},
                                                                             {"status": "suspended"})
    assert (resumed["details"]["before"], resumed["details"]["after"]) == ({"status": "suspended"},
                                                                         {"status": "active"})
    [onboarded] = _platform_events(harness, "tenant.onboarded")
    assert onboarded["details"]["after"]["status"] == "active" and onboarded["details"]["before"] is None

    operator_id = _operator_key_id(harness)
    r = harness.client.post("/v1/admin/keys/rotate", json={"grace_seconds": 60}, headers=harness.op_headers)
    assert r.status_code == 201, r.text
    [rotated] = _platform_events(harness, "operator_key.rotated", {"Authorization": f"Bearer {r.json()['key']}"})
    assert rotated["actor"] == operator_id and rotated["details"]["before"] == {"expires_at": None}
    assert rotated["details"]["after"]["expires_at"] is not None


def test_onboarding_from_the_shell_is_audited_too(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    from midwatch.cli import cmd_tenant_create

    assert cmd_tenant_create(argparse.Namespace(name="shell-made", display_name="Shell")) == 0
    [event] = [e for e in _platform_events(harness, "tenant.onboarded") if e["details"]["name"] == "shell-made"]
    assert event["actor"] == "cli" and event["details"]["via"] == "midwatch tenant create"
    assert event["details"]["after"] == {"status": "active", "display_name": "Shell"}
