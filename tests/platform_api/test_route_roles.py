"""Every route declares who may call it, in one place the guard reads (the handler's ``opt``), and the
declarations can be read back as a route x role table (``platform_api.routes.route_table``)."""

from __future__ import annotations

from litestar import Litestar, Router, get

from platform_api.app import create_app
from platform_api.auth import TENANT_ADMIN, role_guard
from platform_api.routes import RouteRoles, route_table
from tenants.kit.settings import Settings
from tests.conftest import Harness

PUBLIC = {"/healthz", "/readyz", "/metrics"}


def _table() -> list[RouteRoles]:
    return route_table(create_app(Settings()))


def test_every_v1_route_declares_its_roles_and_only_public_routes_declare_none() -> None:
    table = _table()
    assert len(table) > 60, "the table found too few routes"
    undeclared = [f"{r.method} {r.path}" for r in table if r.path.startswith("/v1") and not r.roles]
    assert not undeclared, undeclared
    assert {r.path for r in table if not r.roles} - PUBLIC == {p for p in {r.path for r in table}
                                                              if p.startswith("/schema")}


def test_the_table_says_which_routes_act_inside_the_callers_tenant() -> None:
    rows = {(r.method, r.path): r for r in _table()}
    keys = rows[("POST", "/v1/keys")]
    assert keys.roles == ("tenant-admin",) and keys.tenant_scoped
    onboard = rows[("POST", "/v1/admin/tenants")]
    assert onboard.roles == ("operator",) and not onboard.tenant_scoped
    runs = rows[("GET", "/v1/runs")]
    assert set(runs.roles) == {"tenant-admin", "approver", "viewer"} and runs.tenant_scoped
    assert set(rows[("POST", "/v1/approvals/{approval_id:str}/approve")].roles) == {"approver", "tenant-admin"}
    assert rows[("GET", "/healthz")].roles == () and not rows[("GET", "/healthz")].tenant_scoped


def test_a_route_without_declared_roles_refuses_everyone(harness: Harness) -> None:
    """Fail closed: a guarded handler that forgot its ``opt`` answers 403, even to a tenant admin."""
    from litestar.testing import TestClient

    @get("/v1/forgotten", sync_to_thread=False)
    def forgotten() -> dict[str, str]:
        return {"ok": "yes"}

    @get("/v1/declared", opt=TENANT_ADMIN, sync_to_thread=False)
    def declared() -> dict[str, str]:
        return {"ok": "yes"}

    tenant = harness.onboard()
    from platform_api.problems import exception_handlers

    app = Litestar([Router("/", guards=[role_guard], route_handlers=[forgotten, declared])],
                   exception_handlers=exception_handlers)  # type: ignore[arg-type]
    with TestClient(app) as client:
        refused = client.get("/v1/forgotten", headers=tenant.headers)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden", refused.text
        assert client.get("/v1/declared", headers=tenant.headers).status_code == 200
        assert client.get("/v1/declared").status_code == 401


def test_a_viewer_is_refused_an_admin_route_with_the_same_problem_as_before(harness: Harness) -> None:
    tenant = harness.onboard()
    viewer = harness.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["key"]
    r = harness.client.post("/v1/keys", json={"role": "viewer"}, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "forbidden" and "tenant-admin" in r.json()["detail"]
    operator = harness.client.get("/v1/runs", headers=harness.op_headers)
    assert operator.status_code == 403 and "operator keys manage the platform" in operator.json()["detail"]
