"""The human side of bounded autonomy: the approval queue and the escalation queue."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Router, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from platform_api.auth import ANY_TENANT_ROLE, TENANT_ADMIN, roles
from platform_api.routes._common import CONFLICT, Cursor, Db, Limit, TenantCaller, audit, page
from platform_api.schemas.approvals import ApprovalOut, Decision, EscalationOut
from platform_api.schemas.common import Page
from tenants.approvals.service import decide, get_approval, list_approvals
from tenants.kit.errors import InvalidInput
from tenants.runs.service import list_escalations, resolve_item

__all__ = ["approvals_router", "escalations_router"]

DECIDERS = roles("approver", "tenant-admin")  # the routed role is checked against the approval itself
ApprovalState = Literal["pending", "approved", "rejected", "expired", "consumed", "superseded"]


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="The approval queue (filter by state, run)")
def approvals(caller: TenantCaller, session: Db, limit: Limit = 100, cursor: Cursor = None,
              approval_state: Annotated[ApprovalState | None, QueryParameter(name="state")] = None,
              run_id: Annotated[str | None, QueryParameter(max_length=40)] = None) -> Page[ApprovalOut]:
    rows = list_approvals(session, caller.tenant_id, state=approval_state, run_id=run_id, after=cursor, limit=limit)
    return page([ApprovalOut.model_validate(a) for a in rows], limit, lambda a: a.id)


@get("/{approval_id:str}", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="One approval: the exact request it allows (its binding) and the arguments")
def approval(approval_id: FromPath[str], caller: TenantCaller, session: Db) -> ApprovalOut:
    return ApprovalOut.model_validate(get_approval(session, caller.tenant_id, approval_id))


def _decide(session: Db, caller: TenantCaller, approval_id: str, data: Decision | None,
            approve: bool) -> ApprovalOut:
    comment = data.comment if data else None
    decided = decide(session, caller.tenant_id, approval_id, approve=approve, role=caller.role, key_id=caller.key_id,
                     comment=comment)
    audit(session, caller, "approval.decided", approval_id,
          details={"decision": "approve" if approve else "reject", "comment": comment, "run_id": decided.run_id})
    return ApprovalOut.model_validate(decided)


@post("/{approval_id:str}/approve", opt=DECIDERS, sync_to_thread=True, responses=CONFLICT, status_code=200,
      summary="Approve (single use, only by the routed role or a tenant admin); the run resumes within seconds")
def approve(approval_id: FromPath[str], caller: TenantCaller, session: Db,
            data: JSONBody[Decision | None] = None) -> ApprovalOut:
    return _decide(session, caller, approval_id, data, True)


@post("/{approval_id:str}/reject", opt=DECIDERS, sync_to_thread=True, responses=CONFLICT, status_code=200,
      summary="Reject (single use); the step is not executed and the item stops with category 'approval'")
def reject(approval_id: FromPath[str], caller: TenantCaller, session: Db,
           data: JSONBody[Decision | None] = None) -> ApprovalOut:
    return _decide(session, caller, approval_id, data, False)


EscalationCursor = Annotated[str | None, QueryParameter(max_length=100, pattern=r"^[^:]*:[0-9]{1,9}$",
                                                   description="next_cursor of the previous page (run:item)")]


def _after(cursor: str | None) -> tuple[str, int] | None:
    if cursor is None:
        return None
    run_id, sep, index = cursor.rpartition(":")
    if not sep or not index.isdigit() or len(index) > 9:
        raise InvalidInput("cursor must be the next_cursor of a previous page", field="cursor")
    return run_id, int(index)


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="The escalation queue: items waiting for a human, with their reason")
def escalations(caller: TenantCaller, session: Db, limit: Limit = 100,
                cursor: EscalationCursor = None) -> Page[EscalationOut]:
    rows = list_escalations(session, caller.tenant_id, after=_after(cursor), limit=limit)
    data = [EscalationOut(run_id=run.id, agent_name=run.agent_name, run_state=run.state,
                          item_index=item.item_index, reason=item.reason,
                          failure_category=item.failure_category, updated_at=item.updated_at)
            for item, run in rows]
    return page(data, limit, lambda e: f"{e.run_id}:{e.item_index}")


def _resolve(session: Db, caller: TenantCaller, run_id: str, item_index: int, data: Decision | None,
             action: str) -> EscalationOut:
    comment = data.comment if data else None
    item = resolve_item(session, caller.tenant_id, run_id, item_index, action=action, key_id=caller.key_id,
                        comment=comment)
    audit(session, caller, "escalation.resolved", run_id,
          details={"action": action, "item_index": item_index, "comment": comment})
    return EscalationOut(run_id=run_id, agent_name="", run_state="queued", item_index=item.item_index,
                         reason=item.reason, failure_category=item.failure_category, updated_at=item.updated_at)


@post("/{run_id:str}/items/{item_index:int}/skip", opt=TENANT_ADMIN, sync_to_thread=True, status_code=200,
      responses=CONFLICT,
      summary="Skip an escalated item (counts as done); the run finishes on its own")
def skip_item(run_id: FromPath[str], item_index: FromPath[int], caller: TenantCaller, session: Db,
              data: JSONBody[Decision | None] = None) -> EscalationOut:
    return _resolve(session, caller, run_id, item_index, data, "skip")


@post("/{run_id:str}/items/{item_index:int}/fail", opt=TENANT_ADMIN, sync_to_thread=True, status_code=200,
      responses=CONFLICT,
      summary="Fail an escalated item by hand; the run finishes on its own")
def fail_item(run_id: FromPath[str], item_index: FromPath[int], caller: TenantCaller, session: Db,
              data: JSONBody[Decision | None] = None) -> EscalationOut:
    return _resolve(session, caller, run_id, item_index, data, "fail")


approvals_router = Router(path="/v1/approvals", route_handlers=[approvals, approval, approve, reject],
                          tags=["approvals"])
escalations_router = Router(path="/v1", route_handlers=[
    Router(path="/escalations", route_handlers=[escalations]),
    Router(path="/runs", route_handlers=[skip_item, fail_item])], tags=["escalations"])
