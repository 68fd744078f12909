"""Runs: list, read, items, the decision timeline (and its verification), cancel, resume."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Router, get, post
from litestar.params import FromPath, Parameter

from platform_api.auth import require
from platform_api.routes._common import INT32_MAX, Caller, Cursor, Limit, int_cursor
from platform_api.schemas import DecisionEventOut, Page, RunItemOut, RunOut
from tenants.audit.service import record
from tenants.kit.db import unit_of_work
from tenants.runs.models import RUN_STATES
from tenants.runs.repository import RunRepository
from tenants.runs.service import cancel_run, get_run, resume_run, verify_run_log
from tenants.scheduling.service import waiting_reason

__all__ = ["router"]

RunState = Literal["queued", "running", "waiting_approval", "suspended", "succeeded", "failed", "cancelled",
                   "escalated", "budget_exhausted"]
ItemState = Literal["pending", "done", "failed", "escalated", "skipped"]
assert set(RunState.__args__) == set(RUN_STATES)  # type: ignore[attr-defined]


@get("/", sync_to_thread=True, summary="List runs, newest first")
def list_runs(principal: Caller, limit: Limit = 50, cursor: Cursor = None,
              run_state: Annotated[RunState | None, Parameter(query="state")] = None,
              agent: Annotated[str | None, Parameter(max_length=64)] = None) -> Page[RunOut]:
    me = require(principal)
    with unit_of_work() as session:
        rows = RunRepository(session, me.tenant_id).list(before=cursor, limit=limit, state=run_state, agent=agent)
        data = [RunOut.model_validate(r) for r in rows]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


@get("/{run_id:str}", sync_to_thread=True, summary="A run with its progress (items done/total, failed items)")
def get_run_route(run_id: FromPath[str], principal: Caller) -> RunOut:
    me = require(principal)
    with unit_of_work() as session:
        run = get_run(session, me.tenant_id, run_id)
        out = RunOut.model_validate(run)
        if run.state == "queued" and run.reason is None:  # capped: say why it waits
            out.reason = waiting_reason(session, me.tenant_id, run.agent_name)
        return out


@get("/{run_id:str}/items", sync_to_thread=True, summary="A run's items with their state, paginated")
def list_items(run_id: FromPath[str], principal: Caller, limit: Limit = 100, cursor: Cursor = None,
               item_state: Annotated[ItemState | None, Parameter(query="state")] = None) -> Page[RunItemOut]:
    me = require(principal)
    with unit_of_work() as session:
        get_run(session, me.tenant_id, run_id)
        rows = RunRepository(session, me.tenant_id).items(run_id, after=int_cursor(cursor, INT32_MAX), limit=limit,
                                                          state=item_state)
        data = [RunItemOut.model_validate(i) for i in rows]
    return Page(data=data, next_cursor=str(data[-1].item_index) if len(data) == limit else None)


@get("/{run_id:str}/events", sync_to_thread=True, summary="The run's decision timeline (append-only, hash-chained)")
def list_events(run_id: FromPath[str], principal: Caller, limit: Limit = 500, cursor: Cursor = None
                ) -> Page[DecisionEventOut]:
    me = require(principal)
    with unit_of_work() as session:
        get_run(session, me.tenant_id, run_id)
        rows = RunRepository(session, me.tenant_id).events(run_id, after=int_cursor(cursor, INT32_MAX), limit=limit)
        data = [DecisionEventOut.model_validate(e) for e in rows]
    return Page(data=data, next_cursor=str(data[-1].seq) if len(data) == limit else None)


@get("/{run_id:str}/events/verify", sync_to_thread=True,
     summary="Recompute the run's event hash chain against its sealed head and report tampering (edited, "
             "inserted, reordered or deleted events, the newest or all of them, or a moved head)")
def verify_events(run_id: FromPath[str], principal: Caller) -> dict[str, Any]:
    me = require(principal)
    with unit_of_work() as session:
        verdict = verify_run_log(session, me.tenant_id, run_id)
    return {"ok": verdict.ok, "events": verdict.events, "first_bad_seq": verdict.first_bad_seq,
            "reason": verdict.reason}


@post("/{run_id:str}/cancel", sync_to_thread=True,
      summary="Cancel a run (a running one stops between steps)", status_code=202)
def cancel(run_id: FromPath[str], principal: Caller) -> RunOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        out = RunOut.model_validate(cancel_run(session, me.tenant_id, run_id))
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="run.cancelled", target=run_id)
        return out


@post("/{run_id:str}/resume", sync_to_thread=True,
      summary="Resume a failed or escalated run from its last checkpoint", status_code=202)
def resume(run_id: FromPath[str], principal: Caller) -> RunOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        out = RunOut.model_validate(resume_run(session, me.tenant_id, run_id))
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="run.resumed", target=run_id)
        return out


router = Router(path="/v1/runs", route_handlers=[list_runs, get_run_route, list_items, list_events, verify_events,
                                                 cancel, resume], tags=["runs"])
