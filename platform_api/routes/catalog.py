"""A tenant's HTTP tools (connectors), model aliases and circuit breakers."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from litestar import Response, Router, delete, get, post, put
from litestar.params import FromPath
from pydantic import BaseModel, ValidationError

from platform_api.auth import require
from platform_api.routes._common import Caller
from platform_api.schemas import Page, PublicText
from runner.catalog import BreakerConfig, BreakerState, ModelConfig, ToolDefinition
from tenants.audit.service import record
from tenants.catalog import service
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput
from tenants.kit.settings import get_settings

__all__ = ["breakers_router", "models_router", "tools_router"]


class ToolOut(BaseModel):
    name: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ModelOut(BaseModel):
    alias: str
    version: int
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class BreakerOut(BaseModel):
    host: str
    state: str
    failures: int
    opened_at: float | None
    last_reason: PublicText
    retry_at: float | None
    updated_at: datetime


def _refuse_hosts(refused: list[tuple[str, str]]) -> None:
    """422 for URLs aimed at metadata, private or (in production settings) loopback hosts."""
    if refused:
        errors = [{"path": field, "message": f"{why}; it cannot be reached from Midwatch"} for field, why in refused]
        raise InvalidInput("; ".join(f"{e['path']}: {e['message']}" for e in errors), errors=errors)


def _validation(exc: ValidationError) -> InvalidInput:
    errors = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['path'] or '(body)'}: {e['message']}" for e in errors)
    return InvalidInput(detail, errors=errors)


@put("/{name:str}", sync_to_thread=True, status_code=201,
     summary="Create or replace an HTTP tool: method, URL template, auth by secret reference, side effect, "
             "idempotency, timeout, retry policy, expected content type and response schema")
def put_tool(name: FromPath[str], data: dict[str, Any], principal: Caller) -> Response[ToolOut]:
    me = require(principal, "tenant-admin")
    try:
        definition = ToolDefinition.model_validate({**data, "name": data.get("name", name)})
    except ValidationError as exc:
        raise _validation(exc) from None
    if definition.name != name:
        raise InvalidInput(f"body name {definition.name!r} differs from the URL's {name!r}", field="name")
    _refuse_hosts(definition.refused_hosts(allow_loopback=get_settings().allow_loopback_egress))
    with unit_of_work() as session:
        tool, created = service.put_tool(session, me.tenant_id, name, definition.model_dump(mode="json"))
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="tool.stored", target=name,
               details={"version": tool.version})
        out = ToolOut(name=tool.name, version=tool.version, definition=tool.definition,
                      created_at=tool.created_at, updated_at=tool.updated_at)
    return Response(out, status_code=201 if created else 200)


@get("/", sync_to_thread=True, summary="List the tenant's HTTP tools")
def list_tools(principal: Caller) -> Page[ToolOut]:
    me = require(principal)
    with unit_of_work() as session:
        rows = service.list_tools(session, me.tenant_id)
        return Page(data=[ToolOut(name=r.name, version=r.version, definition=r.definition, created_at=r.created_at,
                                  updated_at=r.updated_at) for r in rows])


@get("/{name:str}", sync_to_thread=True, summary="One HTTP tool")
def get_tool(name: FromPath[str], principal: Caller) -> ToolOut:
    me = require(principal)
    with unit_of_work() as session:
        r = service.get_tool(session, me.tenant_id, name)
        return ToolOut(name=r.name, version=r.version, definition=r.definition, created_at=r.created_at,
                       updated_at=r.updated_at)


@delete("/{name:str}", sync_to_thread=True, status_code=204, summary="Delete an HTTP tool")
def delete_tool(name: FromPath[str], principal: Caller) -> None:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        service.delete_tool(session, me.tenant_id, name)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="tool.deleted", target=name)


@put("/{alias:str}", sync_to_thread=True, status_code=201,
     summary="Create or replace a model alias (openai-compatible, anthropic or sandbox) with per-token prices")
def put_model(alias: FromPath[str], data: dict[str, Any], principal: Caller) -> Response[ModelOut]:
    me = require(principal, "tenant-admin")
    try:
        config = ModelConfig.model_validate({**data, "alias": alias})
    except ValidationError as exc:
        raise _validation(exc) from None
    _refuse_hosts(config.refused_hosts(allow_loopback=get_settings().allow_loopback_egress))
    with unit_of_work() as session:
        model, created = service.put_model(session, me.tenant_id, alias, config.model_dump(mode="json"))
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="model.stored", target=alias,
               details={"version": model.version})
        out = ModelOut(alias=model.alias, version=model.version, config=model.config,
                       created_at=model.created_at, updated_at=model.updated_at)
    return Response(out, status_code=201 if created else 200)


@get("/", sync_to_thread=True, summary="List the tenant's model aliases (plus the built-in 'sandbox')")
def list_models(principal: Caller) -> Page[ModelOut]:
    me = require(principal)
    with unit_of_work() as session:
        rows = service.list_models(session, me.tenant_id)
        return Page(data=[ModelOut(alias=r.alias, version=r.version, config=r.config, created_at=r.created_at,
                                   updated_at=r.updated_at) for r in rows])


@get("/{alias:str}", sync_to_thread=True, summary="One model alias (404 for an unknown one)")
def get_model(alias: FromPath[str], principal: Caller) -> ModelOut:
    me = require(principal)
    with unit_of_work() as session:
        r = service.get_model(session, me.tenant_id, alias)
        return ModelOut(alias=r.alias, version=r.version, config=r.config, created_at=r.created_at,
                        updated_at=r.updated_at)


@delete("/{alias:str}", sync_to_thread=True, status_code=204, summary="Delete a model alias")
def delete_model(alias: FromPath[str], principal: Caller) -> None:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        service.delete_model(session, me.tenant_id, alias)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="model.deleted", target=alias)


def _breaker_out(host: str, raw: dict[str, Any], updated_at: datetime) -> BreakerOut:
    state = BreakerState.from_dict(raw)
    retry_at = None
    if state.state == "open" and state.opened_at is not None:
        retry_at = state.opened_at + BreakerConfig().open_for_s
    return BreakerOut(host=host, state=state.state, failures=state.failures, opened_at=state.opened_at,
                      last_reason=state.last_reason, retry_at=retry_at, updated_at=updated_at)


@get("/", sync_to_thread=True, summary="Circuit breakers per dependency host (closed, open, half_open)")
def list_breakers(principal: Caller) -> Page[BreakerOut]:
    me = require(principal)
    with unit_of_work() as session:
        rows = service.list_breakers(session, me.tenant_id)
        return Page(data=[_breaker_out(r.host, r.state, r.updated_at) for r in rows])


@post("/{host:str}/reset", sync_to_thread=True, status_code=200, summary="Close a breaker by hand")
def reset_breaker(host: FromPath[str], principal: Caller) -> dict[str, Any]:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        service.reset_breaker(session, me.tenant_id, host, BreakerState().to_dict())
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="breaker.reset", target=host)
    return {"host": host, "state": "closed", "reset_at": time.time()}


tools_router = Router(path="/v1/tools", route_handlers=[put_tool, list_tools, get_tool, delete_tool], tags=["tools"])
models_router = Router(path="/v1/models", route_handlers=[put_model, list_models, get_model, delete_model],
                       tags=["models"])
breakers_router = Router(path="/v1/breakers", route_handlers=[list_breakers, reset_breaker], tags=["breakers"])
