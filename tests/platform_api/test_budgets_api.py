"""/v1/budgets: operators set limits (money as strings), tenants read limits, use, reservations, events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tenants.budgets.service import reserve
from tenants.kit.db import unit_of_work
from tests.conftest import Harness

LIMITS = [
    {"metric": "cost_usd", "limit": "25.50", "period": "month", "timezone": "Pacific/Auckland"},
    {"metric": "llm_calls", "limit": 1000, "period": "day"},
    {"metric": "tokens", "limit": "200000", "period": "day", "agent": "invoice-followup"},
    {"metric": "concurrent_runs", "limit": 2},
]


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    """SQLite, no workers: these tests exercise the API and the budget service only."""
    return make_harness(worker=None)


def _put(h: Harness, tenant: str, body: object, headers: dict[str, str] | None = None) -> object:
    return h.client.put(f"/v1/admin/tenants/{tenant}/budgets", json=body, headers=headers or h.op_headers)


def test_an_operator_sets_limits_and_the_tenant_reads_them_with_use_as_decimal_strings(harness: Harness) -> None:
    tenant = harness.onboard()
    r = _put(harness, tenant.name, LIMITS)
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    with unit_of_work() as session:
        reserve(session, tenant.id, "invoice-followup", "cost_usd", "0.1", "a")
        reserve(session, tenant.id, "invoice-followup", "cost_usd", "0.2", "b")
    viewer = harness.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["key"]
    body = harness.client.get("/v1/budgets", headers={"Authorization": f"Bearer {viewer}"}).json()
    money = next(x for x in body["limits"] if x["metric"] == "cost_usd")
    assert money["limit"] == "25.5" and money["reserved"] == "0.3" and money["remaining"] == "25.2"
    assert money["used"] == "0" and money["timezone"] == "Pacific/Auckland" and money["agent"] is None
    tokens = next(x for x in body["limits"] if x["metric"] == "tokens")
    assert tokens["agent"] == "invoice-followup" and tokens["limit"] == "200000"
    slots = next(x for x in body["limits"] if x["metric"] == "concurrent_runs")
    assert slots["period"] is None and slots["period_start"] is None
    assert sorted(x["id"] for x in body["reservations"]) == ["a", "b"]
    assert {x["amount"] for x in body["reservations"]} == {"0.1", "0.2"}
    assert body["events"] == []
    listed = harness.client.get("/v1/budgets/reservations?state=reserved", headers=tenant.headers).json()
    assert len(listed["data"]) == 2
    # PUT replaces the whole set
    assert _put(harness, tenant.name, LIMITS[:1]).status_code == 200  # type: ignore[attr-defined]
    assert [x["metric"] for x in harness.client.get("/v1/budgets", headers=tenant.headers).json()["limits"]] == [
        "cost_usd"]


def test_only_operators_set_limits_and_bad_limits_are_refused_with_problem_json(harness: Harness) -> None:
    tenant = harness.onboard()
    assert _put(harness, tenant.name, LIMITS, headers=tenant.headers).status_code == 403  # type: ignore[attr-defined]
    assert _put(harness, "no-such-tenant", LIMITS).status_code == 404  # type: ignore[attr-defined]
    assert harness.client.get("/v1/budgets", headers=harness.op_headers).status_code == 403
    bad = [
        [{"metric": "cost_usd", "limit": 25.5, "period": "day"}],  # float money
        [{"metric": "cost_usd", "limit": 25, "period": "day"}],  # money must be a string
        [{"metric": "cost_usd", "limit": "abc", "period": "day"}],
        [{"metric": "cost_usd", "limit": "-1", "period": "day"}],
        [{"metric": "tokens", "limit": "1.5", "period": "day"}],
        [{"metric": "tokens", "limit": 10}],  # no period
        [{"metric": "tokens", "limit": 10, "period": "week"}],
        [{"metric": "tokens", "limit": 10, "period": "day", "timezone": "Mars/Base"}],
        [{"metric": "concurrent_runs", "limit": 2, "period": "day"}],
        [{"metric": "tokens", "limit": 10, "period": "day", "extra": 1}],
        [{"metric": "gpus", "limit": 10, "period": "day"}],
        [{"metric": "runs", "limit": 1, "period": "day"}, {"metric": "runs", "limit": 2, "period": "day"}],
    ]
    for body in bad:
        r = _put(harness, tenant.name, body)
        assert r.status_code == 422, (body, r.text)  # type: ignore[attr-defined]
        assert r.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
        assert r.json()["code"] == "validation_error"  # type: ignore[attr-defined]


def test_a_tenant_sees_only_its_own_budgets(harness: Harness) -> None:
    a, b = harness.onboard(), harness.onboard()
    _put(harness, a.name, LIMITS[:1])
    with unit_of_work() as session:
        reserve(session, a.id, "x", "cost_usd", "1", "a-res")
    body = harness.client.get("/v1/budgets", headers=b.headers).json()
    assert body == {"limits": [], "reservations": [], "events": []}
