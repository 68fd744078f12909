"""The audit trail: a tenant's own chain (admins and viewers), any chain for operators; each with verification."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Router, get
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict

from platform_api.auth import operator_only, require
from platform_api.routes._common import INT32_MAX, Caller, Cursor, Limit, int_cursor
from platform_api.schemas import Page
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.audit import service
from tenants.kit.db import Session, unit_of_work
from tenants.kit.errors import NotFound

__all__ = ["admin_router", "router"]

Action = Annotated[str | None, Parameter(max_length=64, pattern=r"^[a-z_]+\.[a-z_.]+$",
                                         description="only events of this action, e.g. key.created")]
TenantName = Annotated[str | None, Parameter(max_length=63, description="tenant name; omitted: the platform chain")]


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str | None
    seq: int
    at: datetime
    actor: str
    actor_role: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def _page(session: Session, tenant_id: str | None, cursor: str | None, limit: int,
          action: str | None) -> Page[AuditEventOut]:
    rows = service.list_events(session, tenant_id, after=int_cursor(cursor, INT32_MAX), limit=limit, action=action)
    data = [AuditEventOut.model_validate(r) for r in rows]
    return Page(data=data, next_cursor=str(data[-1].seq) if len(data) == limit else None)


@get("/", sync_to_thread=True, summary="The tenant's audit trail, oldest first (filter by action)")
def list_audit(principal: Caller, limit: Limit = 100, cursor: Cursor = None, action: Action = None
               ) -> Page[AuditEventOut]:
    me = require(principal, "tenant-admin", "viewer")
    with unit_of_work() as session:
        return _page(session, me.tenant_id, cursor, limit, action)


@get("/verify", sync_to_thread=True, summary="Recompute the tenant's audit hash chain and report tampering")
def verify_audit(principal: Caller) -> dict[str, Any]:
    me = require(principal, "tenant-admin", "viewer")
    with unit_of_work() as session:
        return service.verify(session, me.tenant_id).to_dict()


def _tenant_id(session: Session, name: str | None) -> str | None:
    if name is None:
        return None
    tenant = AccountsPlatformRepository(session).tenant_by_name(name)
    if tenant is None:
        raise NotFound(f"tenant {name!r} not found")
    return tenant.id


@get("/", sync_to_thread=True, summary="Operator: a tenant's audit trail (?tenant=NAME) or the platform chain")
def admin_list_audit(principal: Caller, tenant: TenantName = None, limit: Limit = 100, cursor: Cursor = None,
                     action: Action = None) -> Page[AuditEventOut]:
    operator_only(principal)
    with unit_of_work() as session:
        return _page(session, _tenant_id(session, tenant), cursor, limit, action)


@get("/verify", sync_to_thread=True, summary="Operator: verify a tenant's audit chain or the platform chain")
def admin_verify_audit(principal: Caller, tenant: TenantName = None) -> dict[str, Any]:
    operator_only(principal)
    with unit_of_work() as session:
        return service.verify(session, _tenant_id(session, tenant)).to_dict()


router = Router(path="/v1/audit", route_handlers=[list_audit, verify_audit], tags=["audit"])
admin_router = Router(path="/v1/admin/audit", route_handlers=[admin_list_audit, admin_verify_audit],
                      tags=["operator"])
