"""Operator endpoints: onboard and list tenants, suspend/resume them, rotate the calling operator key."""

from __future__ import annotations

from litestar import Router, get, post, put
from litestar.params import FromPath, JSONBody

from platform_api.auth import operator_only
from platform_api.routes._common import Caller, Cursor, Limit, expiry_change
from platform_api.schemas import (
    CreateTenant,
    IssuedKeyOut,
    KeyOut,
    OnboardedTenant,
    Page,
    RotateKey,
    SchedulingIn,
    SchedulingOut,
    TenantOut,
)
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import Principal, onboard_tenant, rotate_operator_key
from tenants.audit.service import record
from tenants.kit.db import unit_of_work
from tenants.runs.service import set_tenant_status
from tenants.scheduling.service import get_scheduling, set_weight

__all__ = ["router"]


@post("/tenants", sync_to_thread=True, summary="Onboard a client tenant; returns its first tenant-admin key once")
def create_tenant(data: CreateTenant, principal: Caller) -> OnboardedTenant:
    operator_only(principal)
    with unit_of_work() as session:
        tenant, issued = onboard_tenant(session, data.name, data.display_name)
        record(session, None, actor=principal.key_id, role=principal.role, action="tenant.onboarded",
               target=tenant.id, details={"name": tenant.name, "admin_key_id": issued.key.id, "before": None,
                                          "after": {"status": tenant.status, "display_name": tenant.display_name}})
        key = KeyOut.model_validate(issued.key).model_dump()
        return OnboardedTenant(tenant=TenantOut.model_validate(tenant),
                               admin_key=IssuedKeyOut(**key, key=issued.plaintext))


@get("/tenants", sync_to_thread=True, summary="List tenants")
def list_tenants(principal: Caller, limit: Limit = 100, cursor: Cursor = None) -> Page[TenantOut]:
    operator_only(principal)
    with unit_of_work() as session:
        rows = AccountsPlatformRepository(session).list_tenants(after=cursor, limit=limit)
        data = [TenantOut.model_validate(t) for t in rows]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


def _set_status(name: str, status: str, principal: Principal) -> TenantOut:
    with unit_of_work() as session:
        tenant, before, runs = set_tenant_status(session, name, status)
        record(session, None, actor=principal.key_id, role=principal.role,
               action="tenant.suspended" if status == "suspended" else "tenant.resumed", target=tenant.id,
               details={"name": tenant.name, "before": {"status": before}, "after": {"status": status},
                        "runs_moved": runs})
        return TenantOut.model_validate(tenant)


@post("/tenants/{name:str}/suspend", sync_to_thread=True,
      summary="Suspend a tenant: its keys stop working, its data stays")
def suspend_tenant(name: FromPath[str], principal: Caller) -> TenantOut:
    operator_only(principal)
    return _set_status(name, "suspended", principal)


@post("/tenants/{name:str}/resume", sync_to_thread=True, summary="Resume a suspended tenant")
def resume_tenant(name: FromPath[str], principal: Caller) -> TenantOut:
    operator_only(principal)
    return _set_status(name, "active", principal)


@get("/tenants/{name:str}/scheduling", sync_to_thread=True,
     summary="A tenant's scheduling weight, cap and running runs")
def get_tenant_scheduling(name: FromPath[str], principal: Caller) -> SchedulingOut:
    operator_only(principal)
    with unit_of_work() as session:
        return SchedulingOut.model_validate(get_scheduling(session, name))


@put("/tenants/{name:str}/scheduling", sync_to_thread=True,
     summary="Set a tenant's scheduling weight (its share of worker time against other tenants with work)",
     description="Weight 1..100 (default 1). Tenants with work get worker time in proportion to their weights; "
                 "a run's priority only orders runs within its own tenant. Audited with before/after.")
def put_tenant_scheduling(name: FromPath[str], data: SchedulingIn, principal: Caller) -> SchedulingOut:
    operator_only(principal)
    with unit_of_work() as session:
        before, after = set_weight(session, name, data.weight)
        record(session, None, actor=principal.key_id, role=principal.role, action="tenant.scheduling_changed",
               target=name, details={"before": {"weight": before.weight}, "after": {"weight": after.weight}})
        return SchedulingOut.model_validate(after)


@post("/keys/rotate", sync_to_thread=True, status_code=201,
      summary="Rotate the calling operator key: a new key (shown once); the caller's expires after the grace")
def rotate_own_key(principal: Caller, data: JSONBody[RotateKey | None] = None) -> IssuedKeyOut:
    operator_only(principal)
    body = data or RotateKey()
    with unit_of_work() as session:
        issued = rotate_operator_key(session, principal.key_id, body.grace_seconds)
        record(session, None, actor=principal.key_id, role="operator", action="operator_key.rotated",
               target=principal.key_id, details={"new_key": issued.key.id, "grace_seconds": body.grace_seconds,
                                                 **expiry_change(issued)})
        return IssuedKeyOut(**KeyOut.model_validate(issued.key).model_dump(), key=issued.plaintext)


router = Router(path="/v1/admin", route_handlers=[create_tenant, list_tenants, suspend_tenant, resume_tenant,
                                                  get_tenant_scheduling, put_tenant_scheduling,
                                                  rotate_own_key],
                tags=["operator"])
