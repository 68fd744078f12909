"""The walking skeleton end to end: onboard → key → agent → run → succeeded → events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Harness, simple_spec


def _full_flow(h: Harness) -> None:
    tenant = h.onboard()
    # the tenant admin creates a viewer key; it is shown once and listed without its value
    r = h.client.post("/v1/keys", json={"role": "viewer", "name": "ops"}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    viewer = r.json()["key"]
    listed = h.client.get("/v1/keys", headers=tenant.headers).json()["data"]
    assert {k["role"] for k in listed} == {"tenant-admin", "viewer"}
    assert all("key" not in k for k in listed)

    stored = h.put_agent(tenant, simple_spec())
    assert stored["created"] is True and stored["version"]["version"] == 1
    assert any(w["code"] == "reliability_projection" for w in stored["version"]["warnings"])

    run = h.submit(tenant, "greeter", {"input": {"customer": "ann@example.com", "amount": 120}})
    assert run["state"] == "queued"
    done = h.wait_run(tenant, run["id"])
    assert done["state"] == "succeeded", done
    assert done["steps_done"] == 3 and done["items_done"] == 1 and done["llm_calls"] == 1

    events = h.client.get(f"/v1/runs/{run['id']}/events",
                          headers={"Authorization": f"Bearer {viewer}"}).json()["data"]
    kinds = [e["kind"] for e in events]
    # the model call is charged (ledger and run) in a commit of its own, before the step's checkpoint
    assert kinds == ["run.started", "step.succeeded", "llm.model_call", "step.succeeded", "step.succeeded",
                     "run.succeeded"]
    assert [e["step_id"] for e in events if e["kind"] == "step.succeeded"] == ["fetch", "draft", "send"]
    assert events[2]["chosen"] == "sandbox" and events[1]["output_hash"]
    verify = h.client.get(f"/v1/runs/{run['id']}/events/verify", headers=tenant.headers).json()
    assert verify == {"ok": True, "events": 6, "first_bad_seq": None, "reason": ""}

    records = h.client.get("/v1/sandbox/records", headers=tenant.headers).json()["data"]
    assert len(records) == 1
    assert records[0]["args"] == {"to": "ann@example.com", "text": "[sandbox] Thank ann@example.com"}
    assert records[0]["idempotency_key"] == f"mw-{run['id']}-0-2"


def test_full_flow_on_the_embedded_default(harness: Harness) -> None:
    _full_flow(harness)


@pytest.mark.postgres
@pytest.mark.redis
def test_full_flow_on_postgres_and_redis_with_a_real_worker_process(make_harness: Callable[..., Harness]) -> None:
    _full_flow(make_harness(db="postgres", broker="redis", worker="process"))


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_full_flow_on_postgres_and_rabbitmq_with_a_real_worker_process(
        make_harness: Callable[..., Harness]) -> None:
    _full_flow(make_harness(db="postgres", broker="amqp", worker="process"))


def test_a_batch_run_reports_progress_and_lists_its_items(harness: Harness) -> None:
    from tests.conftest import batch_spec

    tenant = harness.onboard()
    harness.put_agent(tenant, batch_spec())
    run = harness.submit(tenant, "batcher", {"items": [{"n": i} for i in range(25)]})
    assert run["items_total"] == 25 and run["is_batch"] is True
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "succeeded" and done["items_done"] == 25 and done["items_failed"] == 0
    page = harness.client.get(f"/v1/runs/{run['id']}/items?limit=10", headers=tenant.headers).json()
    assert [i["item_index"] for i in page["data"]] == list(range(10)) and page["next_cursor"] == "9"
    rest = harness.client.get(f"/v1/runs/{run['id']}/items?limit=100&cursor=9", headers=tenant.headers).json()
    assert len(rest["data"]) == 15 and rest["next_cursor"] is None
    assert {i["state"] for i in page["data"] + rest["data"]} == {"done"}
