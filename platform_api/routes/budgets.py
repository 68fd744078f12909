"""Budgets: tenants read their limits, use, open reservations and threshold events; operators set limits."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Router, get, put
from litestar.params import FromPath, JSONBody, QueryParameter

from platform_api.auth import ANY_TENANT_ROLE, OPERATOR
from platform_api.routes._common import (
    Caller,
    Db,
    Int64Cursor,
    Limit,
    TenantCaller,
    audit,
    page,
)
from platform_api.schemas.budgets import BudgetEventOut, BudgetsOut, LimitIn, LimitOut, ReservationOut
from platform_api.schemas.common import Page
from tenants.accounts.service import tenant_named
from tenants.budgets.repository import BudgetRepository
from tenants.budgets.service import ALL_AGENTS, LimitSpec, LimitUsage, limits_snapshot, overview, set_limits
from tenants.kit.errors import InvalidInput

__all__ = ["admin_router", "router"]

ReservationState = Annotated[Literal["reserved", "settled", "released", "expired"] | None,
                             QueryParameter(name="state", description="only reservations in this state")]


def _limit_out(usage: LimitUsage) -> LimitOut:
    return LimitOut(agent=None if usage.agent == ALL_AGENTS else usage.agent, metric=usage.metric,
                    period=None if usage.metric == "concurrent_runs" else usage.period, timezone=usage.timezone,
                    limit=usage.limit, used=usage.used, reserved=usage.reserved, remaining=usage.remaining,
                    overspend=usage.overspend, period_start=usage.period_start, period_end=usage.period_end)


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="Your limits with this period's use, open reservations, threshold events")
def get_budgets(caller: TenantCaller, session: Db) -> BudgetsOut:
    repo = BudgetRepository(session, caller.tenant_id)
    return BudgetsOut(
        limits=[_limit_out(u) for u in overview(session, caller.tenant_id)],
        reservations=[ReservationOut.model_validate(r) for r in repo.reservations(state="reserved", limit=100)],
        events=[BudgetEventOut.model_validate(e) for e in repo.events(before=None, limit=100)],
    )


@get("/events", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="Threshold events (50/80/100 % of a limit), newest first")
def list_events(caller: TenantCaller, session: Db, limit: Limit = 100,
                cursor: Int64Cursor = None) -> Page[BudgetEventOut]:
    rows = BudgetRepository(session, caller.tenant_id).events(before=cursor, limit=limit)
    return page([BudgetEventOut.model_validate(e) for e in rows], limit, lambda e: e.id)


@get("/reservations", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="Reservations, newest first (filter by state)")
def list_reservations(caller: TenantCaller, session: Db, limit: Limit = 100,
                      res_state: ReservationState = None) -> Page[ReservationOut]:
    rows = BudgetRepository(session, caller.tenant_id).reservations(state=res_state, limit=limit)
    return Page(data=[ReservationOut.model_validate(r) for r in rows])


@put("/tenants/{name:str}/budgets", opt=OPERATOR, sync_to_thread=True,
     summary="Replace a tenant's budget limits (money as decimal strings)",
     description="Audited on the platform chain (GET /v1/admin/audit) as tenant.budgets_set with the limits "
                 "before and after.")
def put_budgets(name: FromPath[str], data: JSONBody[list[LimitIn]], principal: Caller, session: Db) -> list[LimitOut]:
    if len(data) > 200:
        raise InvalidInput("at most 200 limits per tenant")
    tenant = tenant_named(session, name)
    before = limits_snapshot(session, tenant.id)
    set_limits(session, tenant.id, [LimitSpec(metric=d.metric, limit=d.limit, period=d.period,
                                              timezone=d.timezone, agent=d.agent) for d in data])
    audit(session, principal, "tenant.budgets_set", tenant.id,
          details={"name": tenant.name, "before": before, "after": limits_snapshot(session, tenant.id)})
    return [_limit_out(u) for u in overview(session, tenant.id)]


@get("/tenants/{name:str}/budgets", opt=OPERATOR, sync_to_thread=True,
     summary="A tenant's budget limits and this period's use")
def get_tenant_budgets(name: FromPath[str], session: Db) -> list[LimitOut]:
    return [_limit_out(u) for u in overview(session, tenant_named(session, name).id)]


router = Router(path="/v1/budgets", route_handlers=[get_budgets, list_events, list_reservations], tags=["budgets"])
admin_router = Router(path="/v1/admin", route_handlers=[put_budgets, get_tenant_budgets], tags=["operator"])
