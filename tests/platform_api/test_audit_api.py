"""Actions through the API land in the tenant's audit trail with the acting key, verifiably; tenants see
only their own trail; operators see the platform chain and any tenant's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Harness, simple_spec


def _admin_key_id(h: Harness, headers: dict[str, str]) -> str:
    keys = h.client.get("/v1/keys", headers=headers).json()["data"]
    return str(next(k["id"] for k in keys if k["role"] == "tenant-admin"))


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_api_actions_are_audited_with_the_acting_key_and_the_chain_verifies(
        make_harness: Callable[..., Harness], db: str) -> None:
    h = make_harness(db=db)
    a, b = h.onboard(), h.onboard()
    admin_id = _admin_key_id(h, a.headers)

    viewer = h.client.post("/v1/keys", json={"role": "viewer"}, headers=a.headers).json()
    assert h.client.delete(f"/v1/keys/{viewer['id']}", headers=a.headers).status_code == 204
    h.put_agent(a, simple_spec())
    run = h.submit(a, "greeter", {"input": {"customer": "ann", "amount": 1}}, key="k1")
    h.submit(a, "greeter", {"input": {"customer": "ann", "amount": 1}}, key="k1")  # replay: not a new run
    h.wait_run(a, run["id"])
    assert h.client.put("/v1/tools/crm.get", json={"method": "GET", "url": "https://crm.example.com/x"},
                        headers=a.headers).status_code == 201
    assert h.client.delete("/v1/tools/crm.get", headers=a.headers).status_code == 204

    r = h.client.get("/v1/audit", headers=a.headers)
    assert r.status_code == 200, r.text
    events = r.json()["data"]
    assert [(e["action"], e["target"]) for e in events] == [
        ("key.created", viewer["id"]), ("key.revoked", viewer["id"]),
        ("agent.version_stored", events[2]["target"]),
        ("tool.stored", "crm.get"), ("tool.deleted", "crm.get")]
    # a run submission is no audit event: the run row and its decision log are its record (no per-tenant
    # serialisation on the submit path)
    assert run["id"] not in r.text
    assert {e["actor"] for e in events} == {admin_id}
    assert [e["seq"] for e in events] == list(range(1, 6))
    assert viewer["key"] not in r.text  # the plaintext of a key is never audited

    page = h.client.get("/v1/audit?limit=2", headers=a.headers).json()
    assert len(page["data"]) == 2 and page["next_cursor"] == "2"
    rest = h.client.get(f"/v1/audit?limit=100&cursor={page['next_cursor']}", headers=a.headers).json()["data"]
    assert [e["seq"] for e in rest] == [3, 4, 5]
    only = h.client.get("/v1/audit?action=tool.stored", headers=a.headers).json()["data"]
    assert [e["target"] for e in only] == ["crm.get"]

    assert h.client.get("/v1/audit/verify", headers=a.headers).json() == {
        "ok": True, "events": 5, "first_bad_seq": None, "reason": ""}

    # tenant isolation: B's trail holds none of A's events; B cannot ask for A's by any parameter
    b_body = h.client.get("/v1/audit", headers=b.headers).text
    assert viewer["id"] not in b_body and run["id"] not in b_body and admin_id not in b_body
    assert h.client.get(f"/v1/audit?tenant={a.name}", headers=b.headers).json()["data"] == []

    # operator: the platform chain (onboarding, suspension) and any tenant's chain
    assert h.client.post(f"/v1/admin/tenants/{b.name}/suspend", headers=h.op_headers).status_code == 201
    platform = h.client.get("/v1/admin/audit?action=tenant.onboarded", headers=h.op_headers).json()["data"]
    assert {e["target"] for e in platform} >= {a.id, b.id} and all(e["tenant_id"] is None for e in platform)
    suspended = h.client.get("/v1/admin/audit?action=tenant.suspended", headers=h.op_headers).json()["data"]
    # the PostgreSQL schema is shared by the session's tests: look at this test's tenants only
    assert [e["target"] for e in suspended if e["target"] in (a.id, b.id)] == [b.id]
    assert h.client.get("/v1/admin/audit/verify", headers=h.op_headers).json()["ok"] is True
    of_a = h.client.get(f"/v1/admin/audit?tenant={a.name}", headers=h.op_headers).json()["data"]
    assert [e["id"] for e in of_a] == [e["id"] for e in events]
    assert h.client.get(f"/v1/admin/audit/verify?tenant={a.name}", headers=h.op_headers).json()["events"] == 5
    assert h.client.get("/v1/admin/audit?tenant=nope-nope", headers=h.op_headers).status_code == 404
    assert h.client.get("/v1/admin/audit", headers=a.headers).status_code == 403
    assert h.client.get("/v1/audit", headers=h.op_headers).status_code == 403
