"""Rehearsals: request one (asynchronous), read reports, and set an agent's deploy gate.

``POST /v1/agents/{name}/rehearsals`` stores a queued rehearsal and wakes the ``run_rehearsal`` actor after
commit; a worker carries it out in a throwaway rehearsal space (it starts processes of its own, so a tenant
has at most one queued or running at a time). ``GET /v1/rehearsals/{id}`` returns its state and, once
finished, its report. ``PUT /v1/agents/{name}/rehearsal-policy`` makes submissions run only versions whose
rehearsal passed (``rehearsal_required`` otherwise). Over the API only the built-in profiles are offered
(custom fault rates are a command-line feature: ``midwatch rehearse --profile FILE``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Response, Router, get, post, put
from litestar.params import FromPath, JSONBody, Parameter
from pydantic import BaseModel, ConfigDict, Field

from platform_api.auth import require
from platform_api.routes._common import INT32_MAX, Caller, Cursor, Limit
from platform_api.schemas import Page, PublicText
from runner.spec import load_version_spec
from tenants.agents.service import get_version
from tenants.kit.db import unit_of_work
from tenants.rehearsals import service

__all__ = ["agent_router", "router"]

ProfileName = Literal["gentle", "realistic", "hostile"]


class RehearsalIn(BaseModel):
    """What to rehearse and how hard."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int | None = Field(None, ge=1, le=INT32_MAX, description="the version to rehearse (default: latest)")
    profile: ProfileName = Field("realistic", description="how often faults strike (built-in profiles)")
    items: int = Field(20, ge=1, le=200, description="items per repetition")
    repeat: int | None = Field(None, ge=1, le=10, description="repetitions of the same items (pass^k); default 3, "
                                                               "or the spec's objective.slo.pass_k.k if larger")
    seed: int = Field(1, ge=0, le=INT32_MAX, description="the fault schedule's seed: same seed, same figures")


class RehearsalOut(BaseModel):
    """A rehearsal and its headline figures (``verdict`` pass/fail once ``state`` is finished)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_name: str
    agent_version: int | None
    source: str
    profile: str
    seed: int
    items: int
    repeat: int
    state: str
    verdict: str | None
    measured: float | None
    projected: float | None
    slo: float | None
    pass_k: float | None
    duplicates: int | None
    recovery_s: float | None
    error: PublicText
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RehearsalDetailOut(RehearsalOut):
    """A rehearsal with its full report (see the README, "The 3 a.m. rehearsal")."""

    report: dict[str, Any] | None


class PolicyIn(BaseModel):
    """An agent's deploy gate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    requires_rehearsal: bool
    min_profile: ProfileName = "realistic"


class PolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    agent_name: str
    requires_rehearsal: bool
    min_profile: str
    updated_by: str
    updated_at: datetime | None


@post("/{name:str}/rehearsals", sync_to_thread=True, status_code=202,
      summary="Rehearse an agent version against a seeded bad night (asynchronous)",
      description="202 with the queued rehearsal; poll GET /v1/rehearsals/{id} for its report. One rehearsal per "
                  "tenant at a time (409 rehearsal_in_progress).")
def request_rehearsal(name: FromPath[str], data: JSONBody[RehearsalIn], principal: Caller) -> Response[RehearsalOut]:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        stored = get_version(session, me.tenant_id, name, data.version)
        spec = load_version_spec(stored.id, lambda: stored.spec)
        target = spec.objective.slo.pass_k
        repeat = data.repeat if data.repeat is not None else max(3, min(10, target.k) if target else 0)
        row = service.request_rehearsal(session, me.tenant_id, name, stored.version, profile=data.profile,
                                        options=None, seed=data.seed, items=data.items, repeat=repeat,
                                        requested_by=me.key_id)
        out = RehearsalOut.model_validate(row)
    return Response(out, status_code=202, headers={"Location": f"/v1/rehearsals/{out.id}"})


@get("/{name:str}/rehearsal-policy", sync_to_thread=True, summary="An agent's deploy gate")
def get_policy(name: FromPath[str], principal: Caller) -> PolicyOut:
    me = require(principal)
    with unit_of_work() as session:
        return PolicyOut.model_validate(service.get_policy(session, me.tenant_id, name))


@put("/{name:str}/rehearsal-policy", sync_to_thread=True, summary="Set an agent's deploy gate",
     description="With requires_rehearsal, submissions run the newest version whose rehearsal passed with at least "
                 "min_profile; asking for a version that has not is a 409 rehearsal_required.")
def put_policy(name: FromPath[str], data: JSONBody[PolicyIn], principal: Caller) -> PolicyOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        policy = service.set_policy(session, me.tenant_id, name, requires_rehearsal=data.requires_rehearsal,
                                    min_profile=data.min_profile, actor=me.key_id, role=me.role)
        return PolicyOut.model_validate(policy)


@get("/", sync_to_thread=True, summary="The tenant's rehearsals, newest first")
def list_rehearsals(principal: Caller, limit: Limit = 50, cursor: Cursor = None,
                    agent: Annotated[str | None, Parameter(max_length=64)] = None) -> Page[RehearsalOut]:
    me = require(principal)
    with unit_of_work() as session:
        rows = service.list_rehearsals(session, me.tenant_id, agent=agent, before=cursor, limit=limit)
        data = [RehearsalOut.model_validate(r) for r in rows]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


@get("/{rehearsal_id:str}", sync_to_thread=True, summary="A rehearsal: its state and, once finished, its report")
def get_rehearsal(rehearsal_id: FromPath[str], principal: Caller) -> RehearsalDetailOut:
    me = require(principal)
    with unit_of_work() as session:
        return RehearsalDetailOut.model_validate(service.get_rehearsal(session, me.tenant_id, rehearsal_id))


agent_router = Router(path="/v1/agents", route_handlers=[request_rehearsal, get_policy, put_policy],
                      tags=["rehearsals"])
router = Router(path="/v1/rehearsals", route_handlers=[list_rehearsals, get_rehearsal], tags=["rehearsals"])
