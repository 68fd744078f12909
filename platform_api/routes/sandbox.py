"""What the built-in ``sandbox.record`` tool did for this tenant."""

from __future__ import annotations

from litestar import Router, get

from platform_api.auth import require
from platform_api.routes._common import INT64_MAX, Caller, Cursor, Limit, int_cursor
from platform_api.schemas import Page, SandboxRecordOut
from tenants.kit.db import unit_of_work
from tenants.sandbox.service import list_records

__all__ = ["router"]


@get("/records", sync_to_thread=True, summary="Effects recorded by sandbox.record, oldest first")
def records(principal: Caller, limit: Limit = 500, cursor: Cursor = None) -> Page[SandboxRecordOut]:
    me = require(principal)
    after = int_cursor(cursor, INT64_MAX)
    with unit_of_work() as session:
        data = [SandboxRecordOut(id=r.seq, idempotency_key=r.idempotency_key, args=r.args, created_at=r.created_at)
                for r in list_records(session, me.tenant_id, after=after, limit=limit)]
    return Page(data=data, next_cursor=str(data[-1].id) if len(data) == limit else None)


router = Router(path="/v1/sandbox", route_handlers=[records], tags=["sandbox"])
