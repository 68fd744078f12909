"""What the built-in ``sandbox.record`` tool did for this tenant."""

from __future__ import annotations

from litestar import Router, get

from platform_api.auth import require
from platform_api.routes._common import Caller, Cursor, Limit
from platform_api.schemas import Page, SandboxRecordOut
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput
from tenants.sandbox.service import list_records

__all__ = ["router"]


@get("/records", sync_to_thread=True, summary="Effects recorded by sandbox.record, oldest first")
def records(principal: Caller, limit: Limit = 500, cursor: Cursor = None) -> Page[SandboxRecordOut]:
    me = require(principal)
    try:
        after = int(cursor) if cursor is not None else None
    except ValueError:
        raise InvalidInput("cursor must be the next_cursor of a previous page", field="cursor") from None
    with unit_of_work() as session:
        data = [SandboxRecordOut.model_validate(r) for r in list_records(session, me.tenant_id, after=after,
                                                                          limit=limit)]
    return Page(data=data, next_cursor=str(data[-1].id) if len(data) == limit else None)


router = Router(path="/v1/sandbox", route_handlers=[records], tags=["sandbox"])
