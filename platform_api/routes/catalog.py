"""A tenant's HTTP tools (connectors), model aliases and circuit breakers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from litestar import Request, Response, Router, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
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


def _tool_body(data: dict[str, Any], name: str) -> dict[str, Any]:
    definition = _parsed(ToolDefinition, {**data, "name": data.get("name", name)})
    if definition.name != name:
        raise InvalidInput(f"body name {definition.name!r} differs from the URL's {name!r}", field="name")
    return definition.model_dump(mode="json")


def _model_body(data: dict[str, Any], alias: str) -> dict[str, Any]:
    return _parsed(ModelConfig, {**data, "alias": alias}).model_dump(mode="json")


@dataclass(frozen=True)
class _Collection:
    """One catalog collection of a tenant (tools by name, models by alias): its path, wire type and rules."""

    kind: str  # "tool" or "model": the audit actions are <kind>.stored / <kind>.deleted
    path: str  # "/{name:str}" or "/{alias:str}": the key in the URL
    out: type[ToolOut] | type[ModelOut]
    body: Callable[[dict[str, Any], str], dict[str, Any]]  # the validated stored form of a PUT body
    put: Callable[[Db, str, str, dict[str, Any]], tuple[Any, bool]]
    list: Callable[[Db, str], Sequence[Any]]
    get: Callable[[Db, str, str], Any]
    delete: Callable[[Db, str, str], None]
    summaries: tuple[str, str, str, str]  # put, list, get, delete


def _key(request: Request[Any, Any, Any]) -> str:
    """The collection's key from the URL (the route's one path parameter)."""
    return str(next(iter(request.path_params.values())))


def _router(c: _Collection, prefix: str, tag: str) -> Router:
    """PUT (create or replace), list, get and delete of one collection."""
    put_summary, list_summary, get_summary, delete_summary = c.summaries

    @put(c.path, opt=TENANT_ADMIN, sync_to_thread=True, status_code=201, summary=put_summary)
    def store(data: JSONBody[dict[str, Any]], caller: TenantCaller, session: Db,
              key: NamedDependency[str]) -> Response[Any]:
        record, created = c.put(session, caller.tenant_id, key, c.body(data, key))
        audit(session, caller, f"{c.kind}.stored", key, details={"version": record.version})
        return Response(c.out.model_validate(record), status_code=201 if created else 200)

    @get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary=list_summary)
    def listed(caller: TenantCaller, session: Db) -> Page[Any]:
        return Page(data=[c.out.model_validate(r) for r in c.list(session, caller.tenant_id)])

    @get(c.path, opt=ANY_TENANT_ROLE, sync_to_thread=True, summary=get_summary)
    def one(caller: TenantCaller, session: Db, key: NamedDependency[str]) -> Any:
        return c.out.model_validate(c.get(session, caller.tenant_id, key))

    @delete(c.path, opt=TENANT_ADMIN, sync_to_thread=True, status_code=204, summary=delete_summary)
    def removed(caller: TenantCaller, session: Db, key: NamedDependency[str]) -> None:
        c.delete(session, caller.tenant_id, key)
        audit(session, caller, f"{c.kind}.deleted", key)

    generic: Any = (Response, Page)
    for handler, returns in ((store, generic[0][c.out]), (listed, generic[1][c.out]), (one, c.out)):
        handler.fn.__annotations__["return"] = returns  # the OpenAPI schema shows the collection's own type
    return Router(path=prefix, route_handlers=[store, listed, one, removed], tags=[tag],
                  dependencies={"key": Provide(_key, sync_to_thread=False)})


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


tools_router = _router(_Collection(
    "tool", "/{name:str}", ToolOut, _tool_body, service.put_tool, service.list_tools, service.get_tool,
    service.delete_tool,
    ("Create or replace an HTTP tool: method, URL template, auth by secret reference, side effect, idempotency, "
     "timeout, retry policy, expected content type and response schema", "List the tenant's HTTP tools",
     "One HTTP tool", "Delete an HTTP tool")), "/v1/tools", "tools")
models_router = _router(_Collection(
    "model", "/{alias:str}", ModelOut, _model_body, service.put_model, service.list_models, service.get_model,
    service.delete_model,
    ("Create or replace a model alias (openai-compatible, anthropic or sandbox) with per-token prices",
     "List the tenant's model aliases (plus the built-in 'sandbox')", "One model alias (404 for an unknown one)",
     "Delete a model alias")), "/v1/models", "models")
breakers_router = Router(path="/v1/breakers", route_handlers=[list_breakers, reset_breaker], tags=["breakers"])
