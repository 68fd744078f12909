"""Blocked scope and egress violations of a tenant's agents (security posture)."""

from __future__ import annotations

from litestar import Router, get

from platform_api.auth import ANY_TENANT_ROLE
from platform_api.routes._common import Db, Int64Cursor, Limit, TenantCaller, page
from platform_api.schemas.common import Page
from platform_api.schemas.security import ViolationOut
from tenants.security.service import list_violations

__all__ = ["router"]


@get("/violations", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="Blocked attempts to use a tool, host or secret outside scope")
def violations(caller: TenantCaller, session: Db, limit: Limit = 100,
               cursor: Int64Cursor = None) -> Page[ViolationOut]:
    rows = list_violations(session, caller.tenant_id, before=cursor, limit=limit)
    data = [ViolationOut.model_validate(v) for v in rows]
    return page(data, limit, lambda v: v.id)


router = Router(path="/v1/security", route_handlers=[violations], tags=["security"])
