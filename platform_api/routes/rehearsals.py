"""Rehearsals: request one (asynchronous), read reports, and set an agent's deploy gate.

``POST /v1/agents/{name}/rehearsals`` stores a queued rehearsal and wakes the ``run_rehearsal`` actor after
commit; a worker carries it out in a throwaway rehearsal space (it starts processes of its own, so a tenant
has at most one queued or running at a time). ``GET /v1/rehearsals/{id}`` returns its state and, once
finished, its report. ``PUT /v1/agents/{name}/rehearsal-policy`` makes submissions run only versions whose
rehearsal passed (``rehearsal_required`` otherwise). Over the API only the built-in profiles are offered
(custom fault rates are a command-line feature: ``midwatch rehearse --profile FILE``).
"""

from __future__ import annotations

from typing import Annotated

from litestar import Response, Router, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from platform_api.auth import ANY_TENANT_ROLE, TENANT_ADMIN
from platform_api.routes._common import Cursor, Db, Limit, TenantCaller, audit
from platform_api.schemas.common import Page
from platform_api.schemas.rehearsals import PolicyIn, PolicyOut, RehearsalDetailOut, RehearsalIn, RehearsalOut
from runner.spec import load_version_spec
from tenants.agents.service import get_version
from tenants.rehearsals import service

__all__ = ["agent_router", "router"]


@post("/{name:str}/rehearsals", opt=TENANT_ADMIN, sync_to_thread=True, status_code=202,
      summary="Rehearse an agent version against a seeded bad night (asynchronous)",
      description="202 with the queued rehearsal; poll GET /v1/rehearsals/{id} for its report. One rehearsal per "
                  "tenant at a time (409 rehearsal_in_progress).")
def request_rehearsal(name: FromPath[str], data: JSONBody[RehearsalIn], caller: TenantCaller,
                      session: Db) -> Response[RehearsalOut]:
    stored = get_version(session, caller.tenant_id, name, data.version)
    spec = load_version_spec(stored.id, lambda: stored.spec)
    target = spec.objective.slo.pass_k
    repeat = data.repeat if data.repeat is not None else max(3, min(10, target.k) if target else 0)
    row = service.request_rehearsal(session, caller.tenant_id, name, stored.version, profile=data.profile,
                                    options=None, seed=data.seed, items=data.items, repeat=repeat,
                                    requested_by=caller.key_id)
    audit(session, caller, "rehearsal.requested", row.id,
          details={"agent": name, "version": stored.version, "profile": data.profile})
    out = RehearsalOut.model_validate(row)
    return Response(out, status_code=202, headers={"Location": f"/v1/rehearsals/{out.id}"})


@get("/{name:str}/rehearsal-policy", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="An agent's deploy gate")
def get_policy(name: FromPath[str], caller: TenantCaller, session: Db) -> PolicyOut:
    return PolicyOut.model_validate(service.get_policy(session, caller.tenant_id, name))


@put("/{name:str}/rehearsal-policy", opt=TENANT_ADMIN, sync_to_thread=True, summary="Set an agent's deploy gate",
     description="With requires_rehearsal, submissions run the newest version whose rehearsal passed with at least "
                 "min_profile; asking for a version that has not is a 409 rehearsal_required.")
def put_policy(name: FromPath[str], data: JSONBody[PolicyIn], caller: TenantCaller, session: Db) -> PolicyOut:
    before = service.get_policy(session, caller.tenant_id, name)
    was = {"requires_rehearsal": bool(before.requires_rehearsal), "min_profile": before.min_profile}
    policy = service.set_policy(session, caller.tenant_id, name, requires_rehearsal=data.requires_rehearsal,
                                min_profile=data.min_profile, actor=caller.key_id)
    audit(session, caller, "agent.rehearsal_policy_set", name, details={
        "agent": name, "before": was, "after": {"requires_rehearsal": data.requires_rehearsal,
                                                "min_profile": data.min_profile}})
    return PolicyOut.model_validate(policy)


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="The tenant's rehearsals, newest first")
def list_rehearsals(caller: TenantCaller, session: Db, limit: Limit = 50, cursor: Cursor = None,
                    agent: Annotated[str | None, QueryParameter(max_length=64)] = None) -> Page[RehearsalOut]:
    rows = service.list_rehearsals(session, caller.tenant_id, agent=agent, before=cursor, limit=limit)
    data = [RehearsalOut.model_validate(r) for r in rows]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


@get("/{rehearsal_id:str}", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="A rehearsal: its state and, once finished, its report")
def get_rehearsal(rehearsal_id: FromPath[str], caller: TenantCaller, session: Db) -> RehearsalDetailOut:
    return RehearsalDetailOut.model_validate(service.get_rehearsal(session, caller.tenant_id, rehearsal_id))


agent_router = Router(path="/v1/agents", route_handlers=[request_rehearsal, get_policy, put_policy],
                      tags=["rehearsals"])
router = Router(path="/v1/rehearsals", route_handlers=[list_rehearsals, get_rehearsal], tags=["rehearsals"])
