"""The human side of bounded autonomy: the approval queue and the escalation queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Router, get, post
from litestar.params import FromPath, Parameter
from pydantic import BaseModel, ConfigDict, Field

from platform_api.auth import require
from platform_api.routes._common import Caller, Cursor, Limit
from platform_api.schemas import Page, PublicText
from tenants.approvals.service import decide, get_approval, list_approvals
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput
from tenants.runs.service import list_escalations, resolve_item

__all__ = ["approvals_router", "escalations_router"]

ApprovalState = Literal["pending", "approved", "rejected", "expired", "consumed", "superseded"]


class ApprovalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    agent_name: str
    item_index: int
    step_id: str
    action: str
    args: Any
    binding: Any = Field(None, description=(
        "What approving this allows, exactly: for an HTTP tool the request that will be sent (tool, "
        "definition_sha256 of the stored definition, method, url, headers other than credentials, auth by "
        "secret name, idempotency_header, body_sha256); for other actions the action and its args. Any "
        "change before the call (the tool replaced, other args) invalidates the approval and asks again."))
    args_hash: str = Field(description="SHA-256 of the binding")
    rule: str
    route: str
    on_timeout: str
    state: str
    decided_by: str | None
    comment: str | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    comment: str | None = Field(None, max_length=2000)


class EscalationOut(BaseModel):
    run_id: str
    agent_name: str
    run_state: str
    item_index: int
    reason: PublicText
    failure_category: str | None
    updated_at: datetime | None


@get("/", sync_to_thread=True, summary="The approval queue (filter by state, run)")
def approvals(principal: Caller, limit: Limit = 100, cursor: Cursor = None,
              approval_state: Annotated[ApprovalState | None, Parameter(query="state")] = None,
              run_id: Annotated[str | None, Parameter(max_length=40)] = None) -> Page[ApprovalOut]:
    me = require(principal)
    with unit_of_work() as session:
        rows = list_approvals(session, me.tenant_id, state=approval_state, run_id=run_id, after=cursor, limit=limit)
        data = [ApprovalOut.model_validate(a) for a in rows]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


@get("/{approval_id:str}", sync_to_thread=True,
     summary="One approval: the exact request it allows (its binding) and the arguments")
def approval(approval_id: FromPath[str], principal: Caller) -> ApprovalOut:
    me = require(principal)
    with unit_of_work() as session:
        return ApprovalOut.model_validate(get_approval(session, me.tenant_id, approval_id))


def _decide(approval_id: str, principal: Any, data: Decision | None, approve: bool) -> ApprovalOut:
    me = require(principal, "approver", "tenant-admin")
    with unit_of_work() as session:
        decided = decide(session, me.tenant_id, approval_id, approve=approve, role=me.role, key_id=me.key_id,
                         comment=data.comment if data else None)
        return ApprovalOut.model_validate(decided)


@post("/{approval_id:str}/approve", sync_to_thread=True, status_code=200,
      summary="Approve (single use, only by the routed role or a tenant admin); the run resumes within seconds")
def approve(approval_id: FromPath[str], principal: Caller, data: Decision | None = None) -> ApprovalOut:
    return _decide(approval_id, principal, data, True)


@post("/{approval_id:str}/reject", sync_to_thread=True, status_code=200,
      summary="Reject (single use); the step is not executed and the item stops with category 'approval'")
def reject(approval_id: FromPath[str], principal: Caller, data: Decision | None = None) -> ApprovalOut:
    return _decide(approval_id, principal, data, False)


def _after(cursor: str | None) -> tuple[str, int] | None:
    if cursor is None:
        return None
    run_id, sep, index = cursor.rpartition(":")
    if not sep or not index.isdigit() or len(index) > 9:
        raise InvalidInput("cursor must be the next_cursor of a previous page", field="cursor")
    return run_id, int(index)


@get("/", sync_to_thread=True, summary="The escalation queue: items waiting for a human, with their reason")
def escalations(principal: Caller, limit: Limit = 100, cursor: Cursor = None) -> Page[EscalationOut]:
    me = require(principal)
    with unit_of_work() as session:
        rows = list_escalations(session, me.tenant_id, after=_after(cursor), limit=limit)
        data = [EscalationOut(run_id=run.id, agent_name=run.agent_name, run_state=run.state,
                              item_index=item.item_index, reason=item.reason,
                              failure_category=item.failure_category, updated_at=item.updated_at)
                for item, run in rows]
    return Page(data=data, next_cursor=f"{data[-1].run_id}:{data[-1].item_index}" if len(data) == limit else None)


def _resolve(run_id: str, item_index: int, principal: Any, data: Decision | None, action: str) -> EscalationOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        item = resolve_item(session, me.tenant_id, run_id, item_index, action=action, key_id=me.key_id,
                            comment=data.comment if data else None)
        return EscalationOut(run_id=run_id, agent_name="", run_state="queued", item_index=item.item_index,
                             reason=item.reason, failure_category=item.failure_category, updated_at=item.updated_at)


@post("/{run_id:str}/items/{item_index:int}/skip", sync_to_thread=True, status_code=200,
      summary="Skip an escalated item (counts as done); the run finishes on its own")
def skip_item(run_id: FromPath[str], item_index: FromPath[int], principal: Caller,
              data: Decision | None = None) -> EscalationOut:
    return _resolve(run_id, item_index, principal, data, "skip")


@post("/{run_id:str}/items/{item_index:int}/fail", sync_to_thread=True, status_code=200,
      summary="Fail an escalated item by hand; the run finishes on its own")
def fail_item(run_id: FromPath[str], item_index: FromPath[int], principal: Caller,
              data: Decision | None = None) -> EscalationOut:
    return _resolve(run_id, item_index, principal, data, "fail")


approvals_router = Router(path="/v1/approvals", route_handlers=[approvals, approval, approve, reject],
                          tags=["approvals"])
escalations_router = Router(path="/v1", route_handlers=[
    Router(path="/escalations", route_handlers=[escalations]),
    Router(path="/runs", route_handlers=[skip_item, fail_item])], tags=["escalations"])
