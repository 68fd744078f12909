"""Runs: list, read, items, the decision timeline (and its verification), cancel, resume."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Router, get, post
from litestar.params import FromPath, QueryParameter

from platform_api.auth import ANY_TENANT_ROLE, TENANT_ADMIN
from platform_api.routes._common import (
    CONFLICT,
    Cursor,
    Db,
    Int32Cursor,
    Limit,
    TenantCaller,
    audit,
    page,
)
from platform_api.schemas.common import Page
from platform_api.schemas.runs import DecisionEventOut, RunItemOut, RunOut
from tenants.runs.models import RUN_STATES, Run
from tenants.runs.repository import RunRepository
from tenants.runs.service import cancel_run, get_run, resume_run, verify_run_log
from tenants.scheduling.service import waiting_reason

__all__ = ["router"]

RunState = Literal["queued", "running", "waiting_approval", "suspended", "succeeded", "failed", "cancelled",
                   "escalated", "budget_exhausted"]
ItemState = Literal["pending", "done", "failed", "escalated", "skipped"]
assert set(RunState.__args__) == set(RUN_STATES)  # type: ignore[attr-defined]


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="List runs, newest first")
def list_runs(caller: TenantCaller, session: Db, limit: Limit = 50, cursor: Cursor = None,
              run_state: Annotated[RunState | None, QueryParameter(name="state")] = None,
              agent: Annotated[str | None, QueryParameter(max_length=64)] = None) -> Page[RunOut]:
    rows = RunRepository(session, caller.tenant_id).list(before=cursor, limit=limit, state=run_state, agent=agent)
    data = [RunOut.model_validate(r) for r in rows]
    return page(data, limit, lambda v: v.id)


@get("/{run_id:str}", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="A run with its progress (items done/total, failed items)")
def get_run_route(run_id: FromPath[str], caller: TenantCaller, session: Db) -> RunOut:
    run = get_run(session, caller.tenant_id, run_id)
    out = RunOut.model_validate(run)
    if run.state == "queued" and run.reason is None:  # capped: say why it waits
        out.reason = waiting_reason(session, caller.tenant_id, run.agent_name)
    return out


@get("/{run_id:str}/items", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="A run's items with their state, paginated")
def list_items(run_id: FromPath[str], caller: TenantCaller, session: Db, limit: Limit = 100,
               cursor: Int32Cursor = None,
               item_state: Annotated[ItemState | None, QueryParameter(name="state")] = None) -> Page[RunItemOut]:
    get_run(session, caller.tenant_id, run_id)
    rows = RunRepository(session, caller.tenant_id).items(run_id, after=cursor, limit=limit,
                                                      state=item_state)
    data = [RunItemOut.model_validate(i) for i in rows]
    return page(data, limit, lambda v: v.item_index)


@get("/{run_id:str}/events", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="The run's decision timeline (append-only, hash-chained)")
def list_events(run_id: FromPath[str], caller: TenantCaller, session: Db, limit: Limit = 500,
                cursor: Int32Cursor = None
                ) -> Page[DecisionEventOut]:
    get_run(session, caller.tenant_id, run_id)
    rows = RunRepository(session, caller.tenant_id).events(run_id, after=cursor, limit=limit)
    data = [DecisionEventOut.model_validate(e) for e in rows]
    return page(data, limit, lambda v: v.seq)


@get("/{run_id:str}/events/verify", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="Recompute the run's event hash chain against its sealed head and report tampering (edited, "
             "inserted, reordered or deleted events, the newest or all of them, or a moved head)")
def verify_events(run_id: FromPath[str], caller: TenantCaller, session: Db) -> dict[str, Any]:
    verdict = verify_run_log(session, caller.tenant_id, run_id)
    return {"ok": verdict.ok, "events": verdict.events, "first_bad_seq": verdict.first_bad_seq,
            "reason": verdict.reason}


@post("/{run_id:str}/cancel", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT,
      summary="Cancel a run (a running one stops between steps)", status_code=202)
def cancel(run_id: FromPath[str], caller: TenantCaller, session: Db) -> RunOut:
    return _controlled(session, caller, "run.cancelled", cancel_run(session, caller.tenant_id, run_id))


@post("/{run_id:str}/resume", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT,
      summary="Resume a failed or escalated run from its last checkpoint", status_code=202)
def resume(run_id: FromPath[str], caller: TenantCaller, session: Db) -> RunOut:
    return _controlled(session, caller, "run.resumed", resume_run(session, caller.tenant_id, run_id))


def _controlled(session: Db, caller: TenantCaller, action: str, run: Run) -> RunOut:
    """The run after a control action, audited."""
    out = RunOut.model_validate(run)
    audit(session, caller, action, run.id)
    return out


router = Router(path="/v1/runs", route_handlers=[list_runs, get_run_route, list_items, list_events, verify_events,
                                                 cancel, resume], tags=["runs"])
