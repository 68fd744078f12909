"""Blocked scope and egress violations of a tenant's agents (security posture)."""

from __future__ import annotations

from datetime import datetime

from litestar import Router, get
from pydantic import BaseModel, ConfigDict

from platform_api.auth import require
from platform_api.routes._common import Caller, Cursor, Limit
from platform_api.schemas import Page
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput
from tenants.security.service import list_violations

__all__ = ["router"]


class ViolationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: str
    agent_name: str
    step_id: str
    kind: str
    target: str
    reason: str
    at: datetime


@get("/violations", sync_to_thread=True, summary="Blocked attempts to use a tool, host or secret outside scope")
def violations(principal: Caller, limit: Limit = 100, cursor: Cursor = None) -> Page[ViolationOut]:
    me = require(principal)
    if cursor is not None and (not cursor.isdigit() or len(cursor) > 18):
        raise InvalidInput("cursor must be the next_cursor of a previous page", field="cursor")
    with unit_of_work() as session:
        rows = list_violations(session, me.tenant_id, before=int(cursor) if cursor else None, limit=limit)
        data = [ViolationOut.model_validate(v) for v in rows]
    return Page(data=data, next_cursor=str(data[-1].id) if len(data) == limit else None)


router = Router(path="/v1/security", route_handlers=[violations], tags=["security"])
