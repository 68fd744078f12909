"""Budgets enforced by the engine: reserved before every priced call, fail closed, never overspent."""

from __future__ import annotations

import time
from typing import Any

from runner.sandbox_upstream import FaultyUpstream, chat
from tests.conftest import Harness, Tenant, simple_spec, spec

TWO_DRAFTS = """\
apiVersion: midwatch/v1
name: drafter
scope: {tools: [sandbox.echo]}
steps:
  - {id: one, llm: {model: sandbox, prompt: "first"}}
  - {id: two, llm: {model: sandbox, prompt: "second"}}
"""


def _limits(h: Harness, tenant: Tenant, limits: list[dict[str, Any]]) -> None:
    r = h.client.put(f"/v1/admin/tenants/{tenant.name}/budgets", json=limits, headers=h.op_headers)
    assert r.status_code == 200, r.text


def test_runs_per_day_refuse_the_run_over_the_limit(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, simple_spec())
    _limits(harness, tenant, [{"metric": "runs", "limit": 2, "period": "day"}])
    for _ in range(2):
        harness.submit(tenant, "greeter", {"input": {"customer": "a", "amount": 1}})
    r = harness.client.post("/v1/agents/greeter/runs", json={"input": {"customer": "a", "amount": 1}},
                            headers=tenant.headers)
    assert r.status_code == 402 and r.json()["code"] == "budget_exhausted", r.text
    assert "runs" in r.json()["detail"]
    assert len(harness.client.get("/v1/runs", headers=tenant.headers).json()["data"]) == 2


def test_an_llm_call_budget_stops_the_run_before_the_call(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, TWO_DRAFTS)
    _limits(harness, tenant, [{"metric": "llm_calls", "limit": 1, "period": "day"}])
    run = harness.submit(tenant, "drafter", {"input": None})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "budget_exhausted" and done["failure_category"] == "budget", done
    assert "llm_calls" in done["reason"] and done["llm_calls"] == 1
    budgets = harness.client.get("/v1/budgets", headers=tenant.headers).json()
    used = next(b for b in budgets["limits"] if b["metric"] == "llm_calls")
    assert used["used"] == "1" and used["reserved"] == "0"


def _priced_model(h: Harness, tenant: Tenant, up: FaultyUpstream, *, priced: bool) -> None:
    assert h.client.post("/v1/secrets", json={"name": "llm_key", "value": "sk-test-123456"},
                         headers=tenant.headers).status_code == 201
    config: dict[str, Any] = {"provider": "openai", "base_url": f"{up.url}/v1", "model": "gpt-test",
                              "api_key_secret": "llm_key"}
    if priced:
        config |= {"price_in_per_mtok": "1000", "price_out_per_mtok": "2000"}  # $0.001 / $0.002 per token
    r = h.client.put("/v1/models/careful", json=config, headers=tenant.headers)
    assert r.status_code == 201, r.text


def _paid_spec(up: FaultyUpstream) -> str:
    return f"""\
apiVersion: midwatch/v1
name: paid
scope: {{tools: [sandbox.echo], egress: ["{up.netloc}"], secrets: [llm_key]}}
steps:
  - {{id: one, llm: {{model: careful, prompt: "hello", max_tokens: 10}}}}
  - {{id: two, llm: {{model: careful, prompt: "again", max_tokens: 10}}}}
"""


def _paid_run(harness: Harness, upstream: FaultyUpstream, *, priced: bool,
              money_limit: str) -> tuple[Tenant, dict[str, Any]]:
    """The ``paid`` agent under a monthly money limit, run to its end."""
    tenant = harness.onboard()
    _priced_model(harness, tenant, upstream, priced=priced)
    harness.put_agent(tenant, _paid_spec(upstream))
    _limits(harness, tenant, [{"metric": "cost_usd", "limit": money_limit, "period": "month"}])
    run = harness.submit(tenant, "paid", {"input": None})
    return tenant, harness.wait_run(tenant, run["id"])


def test_a_money_budget_is_reserved_worst_case_and_reconciled(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/v1/chat/completions", [chat("fine", prompt_tokens=5, completion_tokens=5)])
    # each call: worst case (prompt/3 + 16) x $0.001 + 10 x $0.002 ~ $0.04; actual 5 x 0.001 + 5 x 0.002 = $0.015
    tenant, done = _paid_run(harness, upstream, priced=True, money_limit="0.05")
    assert done["state"] == "budget_exhausted", done
    assert done["cost_usd"] == "0.015" and done["llm_calls"] == 1
    assert len(upstream.requests_to("/v1/chat/completions")) == 1, "a call was made without a reservation"
    money = next(b for b in harness.client.get("/v1/budgets", headers=tenant.headers).json()["limits"]
                 if b["metric"] == "cost_usd")
    assert money["used"] == "0.015" and money["reserved"] == "0"


def test_an_unpriced_model_is_refused_under_a_money_budget(harness: Harness, upstream: FaultyUpstream) -> None:
    upstream.script("/v1/chat/completions", [chat("fine")])
    _, done = _paid_run(harness, upstream, priced=False, money_limit="10")
    assert done["state"] == "budget_exhausted" and "no price" in done["reason"], done
    assert upstream.requests_to("/v1/chat/completions") == []


def test_the_concurrent_runs_limit_holds_across_workers(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, spec("napper", {"id": "nap", "tool": "sandbox.sleep", "args": {"seconds": 0.4}}))
    _limits(harness, tenant, [{"metric": "concurrent_runs", "limit": 1}])
    runs = [harness.submit(tenant, "napper", {"input": None}) for _ in range(3)]
    peak = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # one listing = one consistent snapshot of every run's state
        listed = harness.client.get("/v1/runs?limit=10", headers=tenant.headers).json()["data"]
        states = [r["state"] for r in listed]
        peak = max(peak, states.count("running"))
        if all(s == "succeeded" for s in states):
            break
        time.sleep(0.02)
    assert all(harness.run(tenant, r["id"])["state"] == "succeeded" for r in runs)
    assert peak == 1, f"{peak} runs of a tenant limited to 1 ran at once"
