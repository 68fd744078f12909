"""What the built-in ``sandbox.record`` tool did for this tenant."""

from __future__ import annotations

from litestar import Router, get

from platform_api.auth import ANY_TENANT_ROLE
from platform_api.routes._common import Db, Int64Cursor, Limit, TenantCaller, page
from platform_api.schemas.common import Page
from platform_api.schemas.runs import SandboxRecordOut
from tenants.sandbox.service import list_records

__all__ = ["router"]


@get("/records", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="Effects recorded by sandbox.record, oldest first")
def records(caller: TenantCaller, session: Db, limit: Limit = 500,
            cursor: Int64Cursor = None) -> Page[SandboxRecordOut]:
    after = cursor
    data = [SandboxRecordOut(id=r.seq, idempotency_key=r.idempotency_key, args=r.args, created_at=r.created_at)
            for r in list_records(session, caller.tenant_id, after=after, limit=limit)]
    return page(data, limit, lambda v: v.id)


router = Router(path="/v1/sandbox", route_handlers=[records], tags=["sandbox"])
