"""A tenant's HTTP tools (connectors), model aliases and circuit breakers."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, TypeVar

from litestar import Response, Router, delete, get, post, put
from litestar.params import FromPath
from pydantic import ValidationError

from platform_api.auth import ANY_TENANT_ROLE, TENANT_ADMIN
from platform_api.routes._common import Db, TenantCaller, audit
from platform_api.schemas.catalog import BreakerOut, ModelOut, ToolOut
from platform_api.schemas.common import Page
from runner.catalog import BreakerConfig, BreakerState, ModelConfig, ToolDefinition
from tenants.catalog import service
from tenants.kit.errors import InvalidInput
from tenants.kit.settings import get_settings

__all__ = ["breakers_router", "models_router", "tools_router"]

T = TypeVar("T", ToolDefinition, ModelConfig)


def _refuse_hosts(refused: list[tuple[str, str]]) -> None:
    """422 for URLs aimed at metadata, private or (in production settings) loopback hosts."""
    if refused:
        errors = [{"path": field, "message": f"{why}; it cannot be reached from Midwatch"} for field, why in refused]
        raise InvalidInput("; ".join(f"{e['path']}: {e['message']}" for e in errors), errors=errors)


def _validation(exc: ValidationError) -> InvalidInput:
    errors = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['path'] or '(body)'}: {e['message']}" for e in errors)
    return InvalidInput(detail, errors=errors)


def _parsed(model: type[T], data: dict[str, Any]) -> T:
    """The body as ``model``: 422 naming each bad field, and URLs aimed at hosts Midwatch never reaches."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise _validation(exc) from None
    _refuse_hosts(parsed.refused_hosts(allow_loopback=get_settings().allow_loopback_egress))
    return parsed


@put("/{name:str}", opt=TENANT_ADMIN, sync_to_thread=True, status_code=201,
     summary="Create or replace an HTTP tool: method, URL template, auth by secret reference, side effect, "
             "idempotency, timeout, retry policy, expected content type and response schema")
def put_tool(name: FromPath[str], data: dict[str, Any], caller: TenantCaller, session: Db) -> Response[ToolOut]:
    definition = _parsed(ToolDefinition, {**data, "name": data.get("name", name)})
    if definition.name != name:
        raise InvalidInput(f"body name {definition.name!r} differs from the URL's {name!r}", field="name")
    tool, created = service.put_tool(session, caller.tenant_id, name, definition.model_dump(mode="json"))
    audit(session, caller, "tool.stored", name, details={"version": tool.version})
    return Response(ToolOut.model_validate(tool), status_code=201 if created else 200)


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="List the tenant's HTTP tools")
def list_tools(caller: TenantCaller, session: Db) -> Page[ToolOut]:
    return Page(data=[ToolOut.model_validate(r) for r in service.list_tools(session, caller.tenant_id)])


@get("/{name:str}", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="One HTTP tool")
def get_tool(name: FromPath[str], caller: TenantCaller, session: Db) -> ToolOut:
    return ToolOut.model_validate(service.get_tool(session, caller.tenant_id, name))


@delete("/{name:str}", opt=TENANT_ADMIN, sync_to_thread=True, status_code=204, summary="Delete an HTTP tool")
def delete_tool(name: FromPath[str], caller: TenantCaller, session: Db) -> None:
    service.delete_tool(session, caller.tenant_id, name)
    audit(session, caller, "tool.deleted", name)


@put("/{alias:str}", opt=TENANT_ADMIN, sync_to_thread=True, status_code=201,
     summary="Create or replace a model alias (openai-compatible, anthropic or sandbox) with per-token prices")
def put_model(alias: FromPath[str], data: dict[str, Any], caller: TenantCaller, session: Db) -> Response[ModelOut]:
    config = _parsed(ModelConfig, {**data, "alias": alias})
    model, created = service.put_model(session, caller.tenant_id, alias, config.model_dump(mode="json"))
    audit(session, caller, "model.stored", alias, details={"version": model.version})
    return Response(ModelOut.model_validate(model), status_code=201 if created else 200)


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="List the tenant's model aliases (plus the built-in 'sandbox')")
def list_models(caller: TenantCaller, session: Db) -> Page[ModelOut]:
    return Page(data=[ModelOut.model_validate(r) for r in service.list_models(session, caller.tenant_id)])


@get("/{alias:str}", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="One model alias (404 for an unknown one)")
def get_model(alias: FromPath[str], caller: TenantCaller, session: Db) -> ModelOut:
    return ModelOut.model_validate(service.get_model(session, caller.tenant_id, alias))


@delete("/{alias:str}", opt=TENANT_ADMIN, sync_to_thread=True, status_code=204, summary="Delete a model alias")
def delete_model(alias: FromPath[str], caller: TenantCaller, session: Db) -> None:
    service.delete_model(session, caller.tenant_id, alias)
    audit(session, caller, "model.deleted", alias)


def _breaker_out(host: str, raw: dict[str, Any], updated_at: datetime) -> BreakerOut:
    state = BreakerState.from_dict(raw)
    retry_at = None
    if state.state == "open" and state.opened_at is not None:
        retry_at = state.opened_at + BreakerConfig().open_for_s
    return BreakerOut(host=host, state=state.state, failures=state.failures, opened_at=state.opened_at,
                      last_reason=state.last_reason, retry_at=retry_at, updated_at=updated_at)


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="Circuit breakers per dependency host (closed, open, half_open)")
def list_breakers(caller: TenantCaller, session: Db) -> Page[BreakerOut]:
    rows = service.list_breakers(session, caller.tenant_id)
    return Page(data=[_breaker_out(r.host, r.state, r.updated_at) for r in rows])


@post("/{host:str}/reset", opt=TENANT_ADMIN, sync_to_thread=True, status_code=200, summary="Close a breaker by hand")
def reset_breaker(host: FromPath[str], caller: TenantCaller, session: Db) -> dict[str, Any]:
    service.reset_breaker(session, caller.tenant_id, host, BreakerState().to_dict())
    audit(session, caller, "breaker.reset", host)
    return {"host": host, "state": "closed", "reset_at": time.time()}


tools_router = Router(path="/v1/tools", route_handlers=[put_tool, list_tools, get_tool, delete_tool], tags=["tools"])
models_router = Router(path="/v1/models", route_handlers=[put_model, list_models, get_model, delete_model],
                       tags=["models"])
breakers_router = Router(path="/v1/breakers", route_handlers=[list_breakers, reset_breaker], tags=["breakers"])
