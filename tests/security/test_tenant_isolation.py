"""Two tenants, every endpoint: tenant B never sees, changes or learns the existence of tenant A's objects.

The endpoint list comes from the app's own route table, so a new endpoint without a row in ``PROBES``
fails :func:`test_every_endpoint_has_an_isolation_probe` until someone decides how it must behave.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from tests.conftest import Harness, Tenant, batch_spec, simple_spec

UNPROBED_PREFIXES = ("/healthz", "/readyz", "/metrics", "/schema")  # no tenant key involved (/metrics: its
# own token, tests/platform_api/test_request_context.py)
IGNORED_METHODS = {"OPTIONS", "HEAD"}
PROBLEM_JSON = "application/problem+json"


@dataclass
class World:
    """Tenant A with a finished batch run (items, events, sandbox records) and keys; tenant B likewise."""

    h: Harness
    a: Tenant
    b: Tenant
    a_run: str
    b_run: str
    a_viewer_key_id: str
    a_ids: set[str]  # every identifier of A's that B must never see
    b_viewer: str
    b_approver: str
    a_approval: str = ""
    a_webhook: str = ""
    a_rehearsal: str = ""
    b_rehearsal: str = ""

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


Kind = Literal["hidden", "listing", "own_namespace", "operator_only"]


@dataclass
class Probe:
    """How B's admin key probes one endpoint.

    - ``hidden``: ``url(world, ref)`` with A's object must answer exactly like with a missing one (404);
    - ``listing``: 200, and none of A's identifiers in the body;
    - ``own_namespace``: acts on B's own namespace (a PUT by name creates B's agent; A's is untouched);
    - ``operator_only``: an operator endpoint, 403 for any tenant key.
    """

    kind: Kind
    url: Callable[[World, str], str]
    a_ref: Callable[[World], str] = lambda w: ""
    missing_ref: Callable[[], str] = lambda: ""
    body: dict[str, Any] | bytes | None = None
    admin_only: bool = False  # needs a tenant-admin key (viewers and approvers get 403)
    may_be_empty: bool = False  # a listing B cannot populate through the API alone (e.g. breakers)
    own_role_check: bool = False  # the route's role rules are covered by its own tests (approval routing)
    roles: tuple[str, ...] | None = None  # tenant roles answered 200 (None: tenant-admin only if admin_only, else all)


def _run_ref(w: World) -> str:
    return w.a_run


def _missing_run() -> str:
    return f"run_{secrets.token_hex(12)}"


def _agent_ref(_w: World) -> str:
    return "alpha-only"


def _missing_agent() -> str:
    return f"never-{secrets.token_hex(4)}"


SPEC_FOR = {"alpha-put": simple_spec("alpha-put").encode()}
READERS = ("tenant-admin", "viewer")  # audit trail and secret metadata: not approvers


def _webhook_ref(w: World) -> str:
    return w.a_webhook


def _missing_webhook() -> str:
    return f"whk_{secrets.token_hex(12)}"


def _missing_secret() -> str:
    return f"never_{secrets.token_hex(4)}"


HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["run.failed"]}
TOOL = {"method": "GET", "url": "https://crm.example.com/invoices/{{ args.id }}"}
MODEL = {"provider": "sandbox"}
GATED = """\
apiVersion: midwatch/v1
name: gated
scope: {tools: [sandbox.record]}
autonomy: {approvals: [{when: "step.tool == 'sandbox.record'", route: approver}]}
steps:
  - {id: pay, tool: sandbox.record, args: {amount: 1}}
"""

def _catalog_probes(kind: str, key: str, b_new: str, body: dict[str, Any], a_only: str,
                    missing: str) -> dict[tuple[str, str], Probe]:
    """A catalog collection (tools, models): B lists it, creates in its own namespace, never sees A's entry."""
    path = f"/v1/{kind}/{{{key}:str}}"
    return {
        ("GET", f"/v1/{kind}"): Probe("listing", lambda w, r: f"/v1/{kind}"),
        ("PUT", path): Probe("own_namespace", lambda w, r: f"/v1/{kind}/{b_new}", body=body, admin_only=True),
        ("GET", path): Probe("hidden", lambda w, r: f"/v1/{kind}/{r}", lambda w: a_only,
                             lambda: f"{missing}{secrets.token_hex(3)}"),
        ("DELETE", path): Probe("hidden", lambda w, r: f"/v1/{kind}/{r}", lambda w: a_only,
                                lambda: f"{missing}{secrets.token_hex(3)}", admin_only=True),
    }


PROBES: dict[tuple[str, str], Probe] = {
    # ---- operator endpoints ---------------------------------------------------------------------
    ("GET", "/v1/admin/tenants"): Probe("operator_only", lambda w, r: "/v1/admin/tenants"),
    ("POST", "/v1/admin/tenants"): Probe("operator_only", lambda w, r: "/v1/admin/tenants",
                                         body={"name": "sneaky"}),
    ("POST", "/v1/admin/tenants/{name:str}/suspend"): Probe(
        "operator_only", lambda w, r: f"/v1/admin/tenants/{w.a.name}/suspend"),
    ("POST", "/v1/admin/tenants/{name:str}/resume"): Probe(
        "operator_only", lambda w, r: f"/v1/admin/tenants/{w.a.name}/resume"),
    ("GET", "/v1/admin/tenants/{name:str}/scheduling"): Probe(
        "operator_only", lambda w, r: f"/v1/admin/tenants/{w.a.name}/scheduling"),
    ("PUT", "/v1/admin/tenants/{name:str}/scheduling"): Probe(
        "operator_only", lambda w, r: f"/v1/admin/tenants/{w.a.name}/scheduling",
        body={"weight": 5}),
    ("POST", "/v1/admin/keys/rotate"): Probe("operator_only", lambda w, r: "/v1/admin/keys/rotate",
                                             body={"grace_seconds": 0}),
    # ---- keys -----------------------------------------------------------------------------------
    ("GET", "/v1/keys"): Probe("listing", lambda w, r: "/v1/keys", admin_only=True),
    ("POST", "/v1/keys"): Probe("own_namespace", lambda w, r: "/v1/keys", body={"role": "viewer"}, admin_only=True),
    ("POST", "/v1/keys/{key_id:str}/rotate"): Probe(
        "hidden", lambda w, r: f"/v1/keys/{r}/rotate", lambda w: w.a_viewer_key_id,
        lambda: f"key_{secrets.token_hex(12)}", body={"grace_seconds": 0}, admin_only=True),
    ("DELETE", "/v1/keys/{key_id:str}"): Probe(
        "hidden", lambda w, r: f"/v1/keys/{r}", lambda w: w.a_viewer_key_id,
        lambda: f"key_{secrets.token_hex(12)}", admin_only=True),
    # ---- agents ---------------------------------------------------------------------------------
    ("GET", "/v1/agents"): Probe("listing", lambda w, r: "/v1/agents"),
    ("GET", "/v1/agents/{name:str}"): Probe("hidden", lambda w, r: f"/v1/agents/{r}", _agent_ref, _missing_agent),
    ("PUT", "/v1/agents/{name:str}"): Probe("own_namespace", lambda w, r: "/v1/agents/alpha-put",
                                            body=SPEC_FOR["alpha-put"], admin_only=True),
    ("POST", "/v1/agents/{name:str}/validate"): Probe(
        "own_namespace", lambda w, r: "/v1/agents/alpha-put/validate", body=SPEC_FOR["alpha-put"]),
    ("GET", "/v1/agents/{name:str}/versions"): Probe(
        "hidden", lambda w, r: f"/v1/agents/{r}/versions", _agent_ref, _missing_agent),
    ("GET", "/v1/agents/{name:str}/versions/{version:int}"): Probe(
        "hidden", lambda w, r: f"/v1/agents/{r}/versions/1", _agent_ref, _missing_agent),
    ("POST", "/v1/agents/{name:str}/runs"): Probe(
        "hidden", lambda w, r: f"/v1/agents/{r}/runs", _agent_ref, _missing_agent,
        body={"items": [{"n": 1}]}, admin_only=True),
    ("POST", "/v1/agents/{name:str}/rehearsals"): Probe(
        "hidden", lambda w, r: f"/v1/agents/{r}/rehearsals", _agent_ref, _missing_agent, body={}, admin_only=True),
    ("GET", "/v1/agents/{name:str}/rehearsal-policy"): Probe(
        "hidden", lambda w, r: f"/v1/agents/{r}/rehearsal-policy", _agent_ref, _missing_agent),
    ("PUT", "/v1/agents/{name:str}/rehearsal-policy"): Probe(
        "hidden", lambda w, r: f"/v1/agents/{r}/rehearsal-policy", _agent_ref, _missing_agent,
        body={"requires_rehearsal": True}, admin_only=True),
    # ---- rehearsals -----------------------------------------------------------------------------
    ("GET", "/v1/rehearsals"): Probe("listing", lambda w, r: "/v1/rehearsals"),
    ("GET", "/v1/rehearsals/{rehearsal_id:str}"): Probe(
        "hidden", lambda w, r: f"/v1/rehearsals/{r}", lambda w: w.a_rehearsal,
        lambda: f"rhr_{secrets.token_hex(12)}"),
    # ---- runs -----------------------------------------------------------------------------------
    ("GET", "/v1/runs"): Probe("listing", lambda w, r: "/v1/runs"),
    ("GET", "/v1/runs/{run_id:str}"): Probe("hidden", lambda w, r: f"/v1/runs/{r}", _run_ref, _missing_run),
    ("GET", "/v1/runs/{run_id:str}/items"): Probe(
        "hidden", lambda w, r: f"/v1/runs/{r}/items", _run_ref, _missing_run),
    ("GET", "/v1/runs/{run_id:str}/events"): Probe(
        "hidden", lambda w, r: f"/v1/runs/{r}/events", _run_ref, _missing_run),
    ("GET", "/v1/runs/{run_id:str}/events/verify"): Probe(
        "hidden", lambda w, r: f"/v1/runs/{r}/events/verify", _run_ref, _missing_run),
    ("POST", "/v1/runs/{run_id:str}/cancel"): Probe(
        "hidden", lambda w, r: f"/v1/runs/{r}/cancel", _run_ref, _missing_run, admin_only=True),
    ("POST", "/v1/runs/{run_id:str}/resume"): Probe(
        "hidden", lambda w, r: f"/v1/runs/{r}/resume", _run_ref, _missing_run, admin_only=True),
    # ---- catalog: tools, models, breakers --------------------------------------------------------
    **_catalog_probes("tools", "name", "crm.b_new", TOOL, "crm.a_only", "crm.never_"),
    **_catalog_probes("models", "alias", "b-new", MODEL, "alpha-model", "never-"),
    ("GET", "/v1/breakers"): Probe("listing", lambda w, r: "/v1/breakers", may_be_empty=True),
    ("POST", "/v1/breakers/{host:str}/reset"): Probe(
        "hidden", lambda w, r: f"/v1/breakers/{r}/reset", lambda w: "crm.example.com",
        lambda: f"never-{secrets.token_hex(3)}.example.com", admin_only=True),
    # ---- secrets (metadata only) -----------------------------------------------------------------
    ("GET", "/v1/secrets"): Probe("listing", lambda w, r: "/v1/secrets"),
    ("POST", "/v1/secrets"): Probe("own_namespace", lambda w, r: "/v1/secrets",
                                   body={"name": "b-new", "value": "b-new-value-123"}, admin_only=True),
    ("GET", "/v1/secrets/{name:str}"): Probe("hidden", lambda w, r: f"/v1/secrets/{r}", lambda w: "a-only",
                                             lambda: f"never-{secrets.token_hex(3)}"),
    ("POST", "/v1/secrets/{name:str}/rotate"): Probe(
        "hidden", lambda w, r: f"/v1/secrets/{r}/rotate", lambda w: "a-only", lambda: f"never-{secrets.token_hex(3)}",
        body={"value": "rotated-by-b-123"}, admin_only=True),
    ("POST", "/v1/secrets/{name:str}/promote"): Probe(
        "hidden", lambda w, r: f"/v1/secrets/{r}/promote", lambda w: "a-only",
        lambda: f"never-{secrets.token_hex(3)}", admin_only=True),
    ("DELETE", "/v1/secrets/{name:str}"): Probe(
        "hidden", lambda w, r: f"/v1/secrets/{r}", lambda w: "a-only", lambda: f"never-{secrets.token_hex(3)}",
        admin_only=True),
    # ---- budgets --------------------------------------------------------------------------------
    ("GET", "/v1/budgets"): Probe("listing", lambda w, r: "/v1/budgets"),
    ("GET", "/v1/budgets/events"): Probe("listing", lambda w, r: "/v1/budgets/events", may_be_empty=True),
    ("GET", "/v1/budgets/reservations"): Probe("listing", lambda w, r: "/v1/budgets/reservations",
                                               may_be_empty=True),
    ("GET", "/v1/admin/tenants/{name:str}/budgets"): Probe(
        "operator_only", lambda w, r: f"/v1/admin/tenants/{w.a.name}/budgets"),
    ("PUT", "/v1/admin/tenants/{name:str}/budgets"): Probe(
        "operator_only", lambda w, r: f"/v1/admin/tenants/{w.a.name}/budgets", body=[]),  # type: ignore[arg-type]
    # ---- approvals and escalations ----------------------------------------------------------------
    ("GET", "/v1/approvals"): Probe("listing", lambda w, r: "/v1/approvals", may_be_empty=True),
    ("GET", "/v1/approvals/{approval_id:str}"): Probe(
        "hidden", lambda w, r: f"/v1/approvals/{r}", lambda w: w.a_approval, lambda: f"apr_{secrets.token_hex(12)}",
        own_role_check=True),
    ("POST", "/v1/approvals/{approval_id:str}/approve"): Probe(
        "hidden", lambda w, r: f"/v1/approvals/{r}/approve", lambda w: w.a_approval,
        lambda: f"apr_{secrets.token_hex(12)}", admin_only=True, own_role_check=True),
    ("POST", "/v1/approvals/{approval_id:str}/reject"): Probe(
        "hidden", lambda w, r: f"/v1/approvals/{r}/reject", lambda w: w.a_approval,
        lambda: f"apr_{secrets.token_hex(12)}", admin_only=True, own_role_check=True),
    ("GET", "/v1/escalations"): Probe("listing", lambda w, r: "/v1/escalations", may_be_empty=True),
    ("POST", "/v1/runs/{run_id:str}/items/{item_index:int}/skip"): Probe(
        "hidden", lambda w, r: f"/v1/runs/{r}/items/0/skip", _run_ref, _missing_run, admin_only=True),
    ("POST", "/v1/runs/{run_id:str}/items/{item_index:int}/fail"): Probe(
        "hidden", lambda w, r: f"/v1/runs/{r}/items/0/fail", _run_ref, _missing_run, admin_only=True),
    ("GET", "/v1/security/violations"): Probe("listing", lambda w, r: "/v1/security/violations", may_be_empty=True),
    # ---- audit trail ----------------------------------------------------------------------------
    ("GET", "/v1/audit"): Probe("listing", lambda w, r: "/v1/audit", roles=READERS),
    ("GET", "/v1/audit/verify"): Probe("listing", lambda w, r: "/v1/audit/verify", roles=READERS,
                                       may_be_empty=True),
    ("GET", "/v1/admin/audit"): Probe("operator_only", lambda w, r: f"/v1/admin/audit?tenant={w.a.name}"),
    ("GET", "/v1/admin/audit/verify"): Probe("operator_only",
                                             lambda w, r: f"/v1/admin/audit/verify?tenant={w.a.name}"),
    # ---- webhooks -------------------------------------------------------------------------------
    ("POST", "/v1/webhooks"): Probe("own_namespace", lambda w, r: "/v1/webhooks", body=HOOK, admin_only=True),
    ("GET", "/v1/webhooks"): Probe("listing", lambda w, r: "/v1/webhooks", admin_only=True),
    ("DELETE", "/v1/webhooks/{webhook_id:str}"): Probe(
        "hidden", lambda w, r: f"/v1/webhooks/{r}", _webhook_ref, _missing_webhook, admin_only=True),
    ("GET", "/v1/webhooks/{webhook_id:str}/deliveries"): Probe(
        "hidden", lambda w, r: f"/v1/webhooks/{r}/deliveries", _webhook_ref, _missing_webhook, admin_only=True),
    ("POST", "/v1/webhooks/{webhook_id:str}/test"): Probe(
        "hidden", lambda w, r: f"/v1/webhooks/{r}/test", _webhook_ref, _missing_webhook, admin_only=True),
    # ---- sandbox --------------------------------------------------------------------------------
    ("GET", "/v1/sandbox/records"): Probe("listing", lambda w, r: "/v1/sandbox/records"),
}


def _app_routes(h: Harness) -> set[tuple[str, str]]:
    return {(method, route.path) for route in h.client.app.routes for method in route.methods
            if method not in IGNORED_METHODS and not route.path.startswith(UNPROBED_PREFIXES)}


def _send(w: World, probe: Probe, key: str, ref: str) -> Any:
    method_path = next(k for k, v in PROBES.items() if v is probe)
    kwargs: dict[str, Any] = {"headers": w.headers(key)}
    if isinstance(probe.body, bytes):
        kwargs["content"] = probe.body
    elif probe.body is not None:
        kwargs["json"] = probe.body
    return w.h.client.request(method_path[0], probe.url(w, ref), **kwargs)


def _build_world(h: Harness) -> World:
    a, b = h.onboard(), h.onboard()
    for tenant in (a, b):
        h.put_agent(tenant, simple_spec("greeter"))  # the same agent name in both tenants
    h.put_agent(a, batch_spec("alpha-only"))
    h.put_agent(a, simple_spec("alpha-put"))
    a_run = h.submit(a, "alpha-only", {"items": [{"n": i} for i in range(3)]}, key="shared-key")
    b_run = h.submit(b, "greeter", {"input": {"customer": "bob@example.com", "amount": 1}}, key="shared-key")
    for tenant, run in ((a, a_run), (b, b_run)):
        assert h.wait_run(tenant, run["id"])["state"] == "succeeded"
    for tenant in (a, b):
        assert h.client.put("/v1/tools/crm.shared", json=TOOL, headers=tenant.headers).status_code == 201
        assert h.client.put("/v1/models/fast", json=MODEL, headers=tenant.headers).status_code == 201
    assert h.client.put("/v1/tools/crm.a_only", json=TOOL, headers=a.headers).status_code == 201
    assert h.client.put("/v1/models/alpha-model", json=MODEL, headers=a.headers).status_code == 201
    for tenant in (a, b):
        r = h.client.post("/v1/secrets", json={"name": "shared", "value": f"{tenant.name}-shared-value"},
                          headers=tenant.headers)
        assert r.status_code == 201, r.text
        r = h.client.put(f"/v1/admin/tenants/{tenant.name}/budgets", headers=h.op_headers,
                         json=[{"metric": "runs", "limit": 1000, "period": "day"}])
        assert r.status_code == 200, r.text
    assert h.client.post("/v1/secrets", json={"name": "a-only", "value": "a-only-value"},
                         headers=a.headers).status_code == 201
    hooks = {}
    for tenant in (a, b):
        r = h.client.post("/v1/webhooks", json=HOOK, headers=tenant.headers)
        assert r.status_code == 201, r.text
        hooks[tenant.name] = r.json()
    keys = {}
    for tenant, role in ((a, "viewer"), (b, "viewer"), (b, "approver")):
        r = h.client.post("/v1/keys", json={"role": role}, headers=tenant.headers)
        assert r.status_code == 201, r.text
        keys[(tenant.name, role)] = r.json()

    # every identifier of A's that could leak
    a_ids = {a.id, a_run["id"], a.admin_key[:14], keys[(a.name, "viewer")]["id"]}
    for k in h.client.get("/v1/keys", headers=a.headers).json()["data"]:
        a_ids |= {k["id"], k["prefix"]}
    for name in ("greeter", "alpha-only", "alpha-put"):
        body = h.client.get(f"/v1/agents/{name}", headers=a.headers).json()
        a_ids |= {body["agent"]["id"], body["version"]["id"]}
    records = h.client.get("/v1/sandbox/records", headers=a.headers).json()["data"]
    assert len(records) == 3
    a_ids |= {r["idempotency_key"] for r in records}
    events = h.events(a, a_run["id"])
    assert len(events) > 3
    a_ids |= {e["hash"] for e in events}
    h.put_agent(a, GATED)
    gated = h.submit(a, "gated", {"input": None})
    h.wait_run(a, gated["id"], states=("waiting_approval",))
    a_approval = h.client.get("/v1/approvals", headers=a.headers).json()["data"][0]["id"]
    a_ids |= {a_approval, gated["id"]}
    a_ids |= {hooks[a.name]["id"], hooks[a.name]["secret"]}
    a_ids |= {e["id"] for e in h.client.get("/v1/audit", headers=a.headers).json()["data"]}
    a_rehearsal = _stored_rehearsal(a, "alpha-only")
    b_rehearsal = _stored_rehearsal(b, "greeter")  # B's own listing is not empty
    a_ids.add(a_rehearsal)
    return World(h=h, a=a, b=b, a_run=a_run["id"], b_run=b_run["id"], a_approval=a_approval,
                 a_viewer_key_id=keys[(a.name, "viewer")]["id"], a_ids=a_ids,
                 b_viewer=keys[(b.name, "viewer")]["key"], b_approver=keys[(b.name, "approver")]["key"],
                 a_webhook=hooks[a.name]["id"], a_rehearsal=a_rehearsal, b_rehearsal=b_rehearsal)


def _stored_rehearsal(tenant: Tenant, agent: str) -> str:
    """A finished rehearsal of the tenant's agent, as `midwatch rehearse` stores it."""
    from tenants.agents.service import get_version
    from tenants.kit.db import unit_of_work
    from tenants.rehearsals.service import Headline, begin_rehearsal, finish_rehearsal

    with unit_of_work() as session:
        version = get_version(session, tenant.id, agent)
        row = begin_rehearsal(session, tenant.id, agent_name=agent, version=version, source="agent",
                              spec_hash=version.spec_hash, profile="realistic", options=None, seed=1, items=2,
                              repeat=1, requested_by="test")
        finish_rehearsal(session, tenant.id, row.id, {"verdict": {"result": "pass"}},
                         Headline("pass", 1.0, 1.0, 0.95, None, 0, None))
        return row.id


def _same_shape(w: World, probe: Probe, name: str) -> None:
    """A's object and a truly missing one get the same answer, the id aside."""
    a_ref, missing = probe.a_ref(w), probe.missing_ref()
    theirs, nothing = _send(w, probe, w.b.admin_key, a_ref), _send(w, probe, w.b.admin_key, missing)
    assert theirs.status_code == nothing.status_code == 404, f"{name}: {theirs.status_code} {theirs.text}"
    for r in (theirs, nothing):
        assert r.headers["content-type"].startswith(PROBLEM_JSON), name
    assert dict(theirs.headers.items()).keys() == dict(nothing.headers.items()).keys(), name
    assert theirs.text.replace(a_ref, "<ref>") == nothing.text.replace(missing, "<ref>"), \
        f"{name}: B can tell A's object from a missing one:\n{theirs.text}\n{nothing.text}"
    assert theirs.json()["code"] == "not_found"


def _a_is_untouched(w: World) -> None:
    h, a = w.h, w.a
    run = h.run(a, w.a_run)
    assert run["state"] == "succeeded" and run["cancel_requested"] is False, run
    assert len(h.client.get("/v1/runs", headers=a.headers).json()["data"]) == 2  # the batch and the gated run
    assert len(h.client.get(f"/v1/runs/{w.a_run}/items", headers=a.headers).json()["data"]) == 3
    assert h.client.get(f"/v1/runs/{w.a_run}/events/verify", headers=a.headers).json()["ok"] is True
    assert len(h.client.get("/v1/sandbox/records", headers=a.headers).json()["data"]) == 3
    assert h.client.get(f"/v1/approvals/{w.a_approval}", headers=a.headers).json()["state"] == "pending"
    for name in ("alpha-only", "alpha-put", "greeter"):
        assert h.client.get(f"/v1/agents/{name}", headers=a.headers).json()["agent"]["latest_version"] == 1
    keys = h.client.get("/v1/keys", headers=a.headers).json()["data"]
    assert all(k["revoked_at"] is None and k["expires_at"] is None for k in keys) and len(keys) == 2
    assert h.client.get("/v1/tools/crm.a_only", headers=a.headers).status_code == 200
    assert {m["alias"] for m in h.client.get("/v1/models", headers=a.headers).json()["data"]} == {"alpha-model",
                                                                                                 "fast"}
    assert h.client.get("/v1/secrets/a-only", headers=a.headers).json()["current_version"] == 1
    assert [x["id"] for x in h.client.get("/v1/webhooks", headers=a.headers).json()["data"]] == [w.a_webhook]
    assert h.client.get("/v1/audit/verify", headers=a.headers).json()["ok"] is True


def _isolation(h: Harness) -> None:
    w = _build_world(h)
    assert _app_routes(h) == set(PROBES)

    for (method, path), probe in PROBES.items():
        name = f"{method} {path}"
        if probe.kind == "hidden":
            _same_shape(w, probe, name)
        elif probe.kind == "listing":
            r = _send(w, probe, w.b.admin_key, "")
            assert r.status_code == 200, f"{name}: {r.text}"
            leaked = {i for i in w.a_ids if i in r.text}
            assert not leaked, f"{name} shows B some of A's identifiers: {leaked}"
            body = r.json()
            assert (body.get("data") if "data" in body else body) or probe.may_be_empty, \
                f"{name}: B's own listing should not be empty (else the check proves nothing)"
        elif probe.kind == "operator_only":
            r = _send(w, probe, w.b.admin_key, "")
            assert r.status_code == 403 and r.json()["code"] == "forbidden", f"{name}: {r.text}"
        else:  # own_namespace: B acts on its own namespace only
            r = _send(w, probe, w.b.admin_key, "")
            assert r.status_code in (200, 201), f"{name}: {r.text}"
            assert not {i for i in w.a_ids if i in r.text}, f"{name} answers with A's identifiers"

    # B's own same-named agent and same Idempotency-Key are B's, not A's
    mine = h.client.get("/v1/agents/greeter", headers=w.b.headers).json()
    assert mine["agent"]["id"] not in w.a_ids and mine["version"]["id"] not in w.a_ids
    assert h.client.get("/v1/agents/alpha-put", headers=w.b.headers).json()["agent"]["latest_version"] == 1
    b_runs = [r["id"] for r in h.client.get("/v1/runs", headers=w.b.headers).json()["data"]]
    assert b_runs == [w.b_run] and w.a_run not in b_runs
    _a_is_untouched(w)
    _roles(w)


def _roles(w: World) -> None:
    h = w.h
    tenant_routes = {k: p for k, p in PROBES.items() if p.kind != "operator_only"}

    # the operator key manages the platform; it cannot act inside a tenant (403 on every tenant route)
    for (method, path), probe in tenant_routes.items():
        r = _send(w, probe, h.operator_key, probe.a_ref(w))
        assert r.status_code == 403 and r.json()["code"] == "forbidden", f"operator on {method} {path}: {r.text}"

    # no key, no answer (401 on every probed route)
    for (method, path), probe in PROBES.items():
        r = h.client.request(method, probe.url(w, probe.a_ref(w)))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", f"anonymous {method} {path}: {r.text}"

    # viewers and approvers read runs and agents but never write (nor list keys)
    for key, role in ((w.b_viewer, "viewer"), (w.b_approver, "approver")):
        for (method, path), probe in tenant_routes.items():
            if probe.own_role_check:
                continue
            r = _send(w, probe, key, _b_ref(w, path))
            if (role not in probe.roles) if probe.roles is not None else probe.admin_only:
                assert r.status_code == 403 and r.json()["code"] == "forbidden", f"{method} {path}: {r.text}"
            else:
                assert r.status_code == 200, f"{method} {path}: {r.text}"

    # a revoked key is 401 at once
    issued = h.client.post("/v1/keys", json={"role": "viewer"}, headers=w.b.headers).json()
    assert h.client.get("/v1/runs", headers=w.headers(issued["key"])).status_code == 200
    assert h.client.delete(f"/v1/keys/{issued['id']}", headers=w.b.headers).status_code == 204
    r = h.client.get("/v1/runs", headers=w.headers(issued["key"]))
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"

    # a suspended tenant's keys are 403 (all of them) until the operator resumes it; the other tenant is unaffected
    assert h.client.post(f"/v1/admin/tenants/{w.b.name}/suspend", headers=h.op_headers).status_code == 201
    for key in (w.b.admin_key, w.b_viewer):
        r = h.client.get("/v1/runs", headers=w.headers(key))
        assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    assert h.client.get("/v1/runs", headers=w.a.headers).status_code == 200
    assert h.client.post(f"/v1/admin/tenants/{w.b.name}/resume", headers=h.op_headers).status_code == 201
    assert h.client.get("/v1/runs", headers=w.b.headers).status_code == 200


B_REFS = (("/v1/secrets/", "shared"), ("/v1/tools/", "crm.shared"), ("/v1/models/", "fast"),
          ("/v1/agents/", "greeter"))


def _b_ref(w: World, path: str) -> str:
    """B's own object for a path (so a read by B's viewer is a 200)."""
    if "{run_id" in path:
        return w.b_run
    if "{rehearsal_id" in path:
        return w.b_rehearsal
    return next((ref for prefix, ref in B_REFS if path.startswith(prefix)), "key_whatever")


def test_every_endpoint_has_an_isolation_probe(harness: Harness) -> None:
    routes = _app_routes(harness)
    missing = routes - set(PROBES)
    stale = set(PROBES) - routes
    assert not missing, f"endpoints without a tenant-isolation probe: {sorted(missing)}"
    assert not stale, f"probes for endpoints that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_tenant_b_never_sees_changes_or_learns_of_tenant_as_objects(make_harness: Callable[..., Harness],
                                                                     db: str) -> None:
    _isolation(make_harness(db=db))


def test_problem_bodies_never_echo_other_tenants_data(harness: Harness) -> None:
    """The idempotency conflict names the existing run: only ever the caller's own."""
    a, b = harness.onboard(), harness.onboard()
    for tenant in (a, b):
        harness.put_agent(tenant, simple_spec())
    a_run = harness.submit(a, "greeter", {"input": {"customer": "a", "amount": 1}}, key="k")
    b_run = harness.submit(b, "greeter", {"input": {"customer": "a", "amount": 1}}, key="k")
    assert a_run["id"] != b_run["id"]  # the same key in two tenants: two runs
    r = harness.client.post("/v1/agents/greeter/runs", json={"input": {"customer": "z"}},
                            headers={**b.headers, "Idempotency-Key": "k"})
    assert r.status_code == 409 and json.loads(r.text)["run_id"] == b_run["id"]
