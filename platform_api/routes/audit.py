"""The audit trail: a tenant's own chain (admins and viewers), any chain for operators; each with verification."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Router, get
from litestar.params import QueryParameter

from platform_api.auth import OPERATOR, roles
from platform_api.problems import problem_responses
from platform_api.routes._common import Db, Int32Cursor, Limit, TenantCaller, page
from platform_api.schemas.audit import AuditEventOut
from platform_api.schemas.common import Page
from tenants.accounts.service import tenant_named
from tenants.audit import service

__all__ = ["admin_router", "router"]

Action = Annotated[str | None, QueryParameter(max_length=64, pattern=r"^[a-z_]+\.[a-z_.]+$",
                                         description="only events of this action, e.g. key.created")]
AUDIT_READERS = roles("tenant-admin", "viewer")
UNKNOWN_TENANT = problem_responses([404])  # ?tenant= names no tenant
TenantName = Annotated[str | None, QueryParameter(max_length=63,
                                                  description="tenant name; omitted: the platform chain")]


def _page(session: Db, tenant_id: str | None, cursor: int | None, limit: int,
          action: str | None) -> Page[AuditEventOut]:
    rows = service.list_events(session, tenant_id, after=cursor, limit=limit, action=action)
    return page([AuditEventOut.model_validate(r) for r in rows], limit, lambda e: e.seq)


@get("/", opt=AUDIT_READERS, sync_to_thread=True, summary="The tenant's audit trail, oldest first (filter by action)")
def list_audit(caller: TenantCaller, session: Db, limit: Limit = 100, cursor: Int32Cursor = None,
               action: Action = None) -> Page[AuditEventOut]:
    return _page(session, caller.tenant_id, cursor, limit, action)


@get("/verify", opt=AUDIT_READERS, sync_to_thread=True,
     summary="Recompute the tenant's audit hash chain and report tampering")
def verify_audit(caller: TenantCaller, session: Db) -> dict[str, Any]:
    return service.verify(session, caller.tenant_id).to_dict()


def _tenant_id(session: Db, name: str | None) -> str | None:
    return None if name is None else tenant_named(session, name).id


@get("/", opt=OPERATOR, sync_to_thread=True, responses=UNKNOWN_TENANT,
     summary="Operator: a tenant's audit trail (?tenant=NAME) or the platform chain")
def admin_list_audit(session: Db, tenant: TenantName = None, limit: Limit = 100, cursor: Int32Cursor = None,
                     action: Action = None) -> Page[AuditEventOut]:
    return _page(session, _tenant_id(session, tenant), cursor, limit, action)


@get("/verify", opt=OPERATOR, sync_to_thread=True, responses=UNKNOWN_TENANT,
     summary="Operator: verify a tenant's audit chain or the platform chain")
def admin_verify_audit(session: Db, tenant: TenantName = None) -> dict[str, Any]:
    return service.verify(session, _tenant_id(session, tenant)).to_dict()


router = Router(path="/v1/audit", route_handlers=[list_audit, verify_audit], tags=["audit"])
admin_router = Router(path="/v1/admin/audit", route_handlers=[admin_list_audit, admin_verify_audit],
                      tags=["operator"])
