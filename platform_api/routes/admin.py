"""Operator endpoints: onboard and list tenants, suspend/resume them, rotate the calling operator key."""

from __future__ import annotations

from litestar import Router, get, post, put
from litestar.params import FromPath, JSONBody

from platform_api.auth import OPERATOR
from platform_api.routes._common import CONFLICT, Caller, Cursor, Db, Limit, audit, expiry_change, page
from platform_api.schemas.accounts import (
    CreateTenant,
    IssuedKeyOut,
    KeyOut,
    OnboardedTenant,
    RotateKey,
    SchedulingIn,
    SchedulingOut,
    TenantOut,
)
from platform_api.schemas.common import Page
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import Principal, onboard_tenant, rotate_operator_key
from tenants.runs.service import set_tenant_status
from tenants.scheduling.service import get_scheduling, set_weight

__all__ = ["router"]


@post("/tenants", opt=OPERATOR, sync_to_thread=True, responses=CONFLICT,
      summary="Onboard a client tenant; returns its first tenant-admin key once")
def create_tenant(data: JSONBody[CreateTenant], principal: Caller, session: Db) -> OnboardedTenant:
    tenant, issued = onboard_tenant(session, data.name, data.display_name)
    audit(session, principal, "tenant.onboarded", tenant.id,
          details={"name": tenant.name, "admin_key_id": issued.key.id, "before": None,
                   "after": {"status": tenant.status, "display_name": tenant.display_name}})
    key = KeyOut.model_validate(issued.key).model_dump()
    return OnboardedTenant(tenant=TenantOut.model_validate(tenant),
                           admin_key=IssuedKeyOut(**key, key=issued.plaintext))


@get("/tenants", opt=OPERATOR, sync_to_thread=True, summary="List tenants")
def list_tenants(principal: Caller, session: Db, limit: Limit = 100, cursor: Cursor = None) -> Page[TenantOut]:
    rows = AccountsPlatformRepository(session).list_tenants(after=cursor, limit=limit)
    return page([TenantOut.model_validate(t) for t in rows], limit, lambda t: t.id)


def _set_status(session: Db, name: str, status: str, principal: Principal) -> TenantOut:
    tenant, before, runs = set_tenant_status(session, name, status)
    audit(session, principal, "tenant.suspended" if status == "suspended" else "tenant.resumed", tenant.id,
          details={"name": tenant.name, "before": {"status": before}, "after": {"status": status},
                   "runs_moved": runs})
    return TenantOut.model_validate(tenant)


@post("/tenants/{name:str}/suspend", opt=OPERATOR, sync_to_thread=True,
      summary="Suspend a tenant: its keys stop working, its data stays")
def suspend_tenant(name: FromPath[str], principal: Caller, session: Db) -> TenantOut:
    return _set_status(session, name, "suspended", principal)


@post("/tenants/{name:str}/resume", opt=OPERATOR, sync_to_thread=True, summary="Resume a suspended tenant")
def resume_tenant(name: FromPath[str], principal: Caller, session: Db) -> TenantOut:
    return _set_status(session, name, "active", principal)


@get("/tenants/{name:str}/scheduling", opt=OPERATOR, sync_to_thread=True,
     summary="A tenant's scheduling weight, cap and running runs")
def get_tenant_scheduling(name: FromPath[str], principal: Caller, session: Db) -> SchedulingOut:
    return SchedulingOut.model_validate(get_scheduling(session, name))


@put("/tenants/{name:str}/scheduling", opt=OPERATOR, sync_to_thread=True,
     summary="Set a tenant's scheduling weight (its share of worker time against other tenants with work)",
     description="Weight 1..100 (default 1). Tenants with work get worker time in proportion to their weights; "
                 "a run's priority only orders runs within its own tenant. Audited with before/after.")
def put_tenant_scheduling(name: FromPath[str], data: JSONBody[SchedulingIn], principal: Caller,
                          session: Db) -> SchedulingOut:
    before, after = set_weight(session, name, data.weight)
    audit(session, principal, "tenant.scheduling_changed", name,
          details={"before": {"weight": before.weight}, "after": {"weight": after.weight}})
    return SchedulingOut.model_validate(after)


@post("/keys/rotate", opt=OPERATOR, sync_to_thread=True, status_code=201, responses=CONFLICT,
      summary="Rotate the calling operator key: a new key (shown once); the caller's expires after the grace")
def rotate_own_key(principal: Caller, session: Db, data: JSONBody[RotateKey | None] = None) -> IssuedKeyOut:
    body = data or RotateKey()
    issued = rotate_operator_key(session, principal.key_id, body.grace_seconds)
    audit(session, principal, "operator_key.rotated", principal.key_id,
          details={"new_key": issued.key.id, "grace_seconds": body.grace_seconds, **expiry_change(issued)})
    return IssuedKeyOut(**KeyOut.model_validate(issued.key).model_dump(), key=issued.plaintext)


router = Router(path="/v1/admin", route_handlers=[create_tenant, list_tenants, suspend_tenant, resume_tenant,
                                                  get_tenant_scheduling, put_tenant_scheduling,
                                                  rotate_own_key],
                tags=["operator"])
