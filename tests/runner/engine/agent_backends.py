"""Helpers for agent runs on real model wire formats: model aliases for each backend (the sandbox model, the fault
upstream's OpenAI- and Anthropic-format endpoints), what the upstream received, and the budget ledger's count."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from runner.sandbox_upstream import FaultyUpstream
from tests.conftest import Harness, Tenant

__all__ = ["PRICE", "REMOTE", "alias_config", "assert_cost_matches_the_ledger", "ledger_cost", "model_requests",
           "onboard_with_model", "tool_results"]

PRICE = {"price_in_per_mtok": "1000", "price_out_per_mtok": "2000"}  # $0.001 / $0.002 per token: visible costs
REMOTE = ["openai", "anthropic"]


def alias_config(up: FaultyUpstream, backend: str) -> dict[str, Any]:
    """A priced model alias: the built-in sandbox model, or the upstream's OpenAI- or Anthropic-format endpoint
    (its API key from the secret ``llm_key``)."""
    if backend == "sandbox":
        return {"provider": "sandbox", **PRICE}
    if backend == "openai":
        return {"provider": "openai", "base_url": f"{up.url}/v1", "model": "gpt-test", "api_key_secret": "llm_key",
                "retry": {"max_attempts": 2, "base_delay_s": 0, "max_delay_s": 0}, **PRICE}
    return {"provider": "anthropic", "base_url": up.url, "model": "claude-test", "api_key_secret": "llm_key",
            "retry": {"max_attempts": 2, "base_delay_s": 0, "max_delay_s": 0}, **PRICE}


def onboard_with_model(h: Harness, up: FaultyUpstream, backend: str) -> Tenant:
    """A new tenant with a $100/day cost budget, the secret ``llm_key`` and the model alias ``brain`` on
    ``backend`` (:func:`alias_config`)."""
    tenant = h.onboard()
    r = h.client.put(f"/v1/admin/tenants/{tenant.name}/budgets", headers=h.op_headers,
                     json=[{"metric": "cost_usd", "limit": "100", "period": "day"}])
    assert r.status_code == 200, r.text
    assert h.client.post("/v1/secrets", json={"name": "llm_key", "value": "sk-test-123456"},
                         headers=tenant.headers).status_code == 201
    r = h.client.put("/v1/models/brain", json=alias_config(up, backend), headers=tenant.headers)
    assert r.status_code == 201, r.text
    return tenant


def model_requests(up: FaultyUpstream) -> list[dict[str, Any]]:
    """The bodies of the model requests the upstream received, in order."""
    return [r.json() for r in up.requests if r.path.endswith(("/chat/completions", "/v1/messages"))]


def tool_results(body: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(call id, content, is_error) of every tool result in a request, in either wire format."""
    out = []
    for message in body["messages"]:
        if message["role"] == "tool":
            out.append((message["tool_call_id"], message["content"], "error" in message["content"]))
        elif isinstance(message.get("content"), list):
            out += [(b["tool_use_id"], b["content"], bool(b.get("is_error"))) for b in message["content"]
                    if b["type"] == "tool_result"]
    return out


def ledger_cost(run_id: str) -> Decimal:
    """What the budget ledger charged for the run's model calls: its settled reservations (not the run's counter)."""
    from tenants.budgets.models import BudgetReservation
    from tenants.kit.db import unit_of_work

    with unit_of_work() as session:
        total = session.scalar(select(func.coalesce(func.sum(BudgetReservation.actual), 0)).where(
            BudgetReservation.run_id == run_id, BudgetReservation.metric == "cost_usd",
            BudgetReservation.state == "settled"))
    return Decimal(total or 0)


def assert_cost_matches_the_ledger(h: Harness, tenant: Tenant, run: dict[str, Any]) -> None:
    """The run's cost is what the ledger charged: per reservation, and on the tenant's budget row; nothing held."""
    cost = Decimal(run["cost_usd"])
    assert cost > 0 and cost == ledger_cost(run["id"]), (cost, ledger_cost(run["id"]))
    budgets = h.client.get("/v1/budgets", headers=tenant.headers).json()
    money = next(b for b in budgets["limits"] if b["metric"] == "cost_usd")
    assert Decimal(money["used"]) == cost and Decimal(money["reserved"]) == 0, money
    assert budgets["reservations"] == []
