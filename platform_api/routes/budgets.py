"""Budgets: tenants read their limits, use, open reservations and threshold events; operators set limits."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Router, get, put
from litestar.params import FromPath, Parameter, QueryParameter

from platform_api.auth import operator_only, require
from platform_api.routes._common import Caller, Limit
from platform_api.schemas import Page
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import Role
from tenants.audit.service import record
from tenants.budgets.repository import BudgetRepository
from tenants.budgets.schemas import BudgetEventOut, BudgetsOut, LimitIn, LimitOut, ReservationOut
from tenants.budgets.service import ALL_AGENTS, LimitSpec, LimitUsage, limits_snapshot, overview, set_limits
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput, NotFound

__all__ = ["admin_router", "router"]

READERS: tuple[Role, ...] = ("tenant-admin", "approver", "viewer")
EventCursor = Annotated[str | None, Parameter(max_length=20, pattern=r"^\d+$",
                                              description="next_cursor of the previous page")]
ReservationState = Annotated[Literal["reserved", "settled", "released", "expired"] | None,
                             QueryParameter(name="state", description="only reservations in this state")]


def _limit_out(usage: LimitUsage) -> LimitOut:
    return LimitOut(agent=None if usage.agent == ALL_AGENTS else usage.agent, metric=usage.metric,
                    period=None if usage.metric == "concurrent_runs" else usage.period, timezone=usage.timezone,
                    limit=usage.limit, used=usage.used, reserved=usage.reserved, remaining=usage.remaining,
                    overspend=usage.overspend, period_start=usage.period_start, period_end=usage.period_end)


@get("/", sync_to_thread=True, summary="Your limits with this period's use, open reservations, threshold events")
def get_budgets(principal: Caller) -> BudgetsOut:
    me = require(principal, *READERS)
    with unit_of_work() as session:
        repo = BudgetRepository(session, me.tenant_id)
        return BudgetsOut(
            limits=[_limit_out(u) for u in overview(session, me.tenant_id)],
            reservations=[ReservationOut.model_validate(r) for r in repo.reservations(state="reserved", limit=100)],
            events=[BudgetEventOut.model_validate(e) for e in repo.events(before=None, limit=100)],
        )


@get("/events", sync_to_thread=True, summary="Threshold events (50/80/100 % of a limit), newest first")
def list_events(principal: Caller, limit: Limit = 100, cursor: EventCursor = None) -> Page[BudgetEventOut]:
    me = require(principal, *READERS)
    with unit_of_work() as session:
        rows = BudgetRepository(session, me.tenant_id).events(before=int(cursor) if cursor else None, limit=limit)
        data = [BudgetEventOut.model_validate(e) for e in rows]
    return Page(data=data, next_cursor=str(data[-1].id) if len(data) == limit else None)


@get("/reservations", sync_to_thread=True, summary="Reservations, newest first (filter by state)")
def list_reservations(principal: Caller, limit: Limit = 100, res_state: ReservationState = None
                      ) -> Page[ReservationOut]:
    me = require(principal, *READERS)
    with unit_of_work() as session:
        rows = BudgetRepository(session, me.tenant_id).reservations(state=res_state, limit=limit)
        return Page(data=[ReservationOut.model_validate(r) for r in rows])


def _tenant_id(name: str) -> str:
    with unit_of_work() as session:
        tenant = AccountsPlatformRepository(session).tenant_by_name(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        return tenant.id


@put("/tenants/{name:str}/budgets", sync_to_thread=True,
     summary="Replace a tenant's budget limits (money as decimal strings)",
     description="Audited on the platform chain (GET /v1/admin/audit) as tenant.budgets_set with the limits "
                 "before and after.")
def put_budgets(name: FromPath[str], data: list[LimitIn], principal: Caller) -> list[LimitOut]:
    operator_only(principal)
    if len(data) > 200:
        raise InvalidInput("at most 200 limits per tenant")
    with unit_of_work() as session:
        tenant = AccountsPlatformRepository(session).tenant_by_name(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        before = limits_snapshot(session, tenant.id)
        set_limits(session, tenant.id, [LimitSpec(metric=d.metric, limit=d.limit, period=d.period,
                                                  timezone=d.timezone, agent=d.agent) for d in data])
        record(session, None, actor=principal.key_id, role=principal.role, action="tenant.budgets_set",
               target=tenant.id, details={"name": tenant.name, "before": before,
                                          "after": limits_snapshot(session, tenant.id)})
        return [_limit_out(u) for u in overview(session, tenant.id)]


@get("/tenants/{name:str}/budgets", sync_to_thread=True, summary="A tenant's budget limits and this period's use")
def get_tenant_budgets(name: FromPath[str], principal: Caller) -> list[LimitOut]:
    operator_only(principal)
    tenant_id = _tenant_id(name)
    with unit_of_work() as session:
        return [_limit_out(u) for u in overview(session, tenant_id)]


router = Router(path="/v1/budgets", route_handlers=[get_budgets, list_events, list_reservations], tags=["budgets"])
admin_router = Router(path="/v1/admin", route_handlers=[put_budgets, get_tenant_budgets], tags=["operator"])
