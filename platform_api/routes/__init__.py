"""Route handlers by resource, mounted under one guarded router.

Every ``/v1`` handler declares the roles it admits in its ``opt`` (``platform_api.auth.roles``); the
router's guard (``platform_api.auth.role_guard``) checks them, and its dependencies give handlers the
caller (``principal`` / ``caller``) and this request's unit of work (``session``). :func:`route_table`
reads the declarations back: method, path, roles and whether the route acts inside the caller's tenant;
:func:`route_table_markdown` renders them as the README's "Routes and roles" table (``midwatch routes``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Operation
from litestar.routes import HTTPRoute

from platform_api.auth import declared_roles, provide_caller, provide_principal, role_guard
from platform_api.openapi import OptionalBodyOperation
from platform_api.problems import problem_responses
from platform_api.routes import (
    admin,
    agents,
    approvals,
    audit,
    budgets,
    catalog,
    keys,
    rehearsals,
    runs,
    sandbox,
    secrets,
    security,
    webhooks,
)
from platform_api.routes._common import provide_session
from tenants.kit.settings import Settings

__all__ = ["RouteRoles", "api_router", "display_path", "document_problems", "route_table", "route_table_markdown"]


def api_router(settings: Settings) -> Router:
    """Every ``/v1`` route, behind the role guard, with the caller and session dependencies; each route's
    OpenAPI operation lists the problems it can answer (:func:`document_problems`)."""
    router = Router(
        path="/", guards=[role_guard], security=[{"bearer": []}],
        dependencies={"principal": Provide(provide_principal, sync_to_thread=False),
                      "caller": Provide(provide_caller, sync_to_thread=False),
                      "session": Provide(provide_session)},
        route_handlers=[admin.router, keys.router, agents.build_router(settings.max_run_body_bytes), runs.router,
                        sandbox.router, catalog.tools_router, catalog.models_router, catalog.breakers_router,
                        secrets.router, budgets.router, budgets.admin_router, approvals.approvals_router,
                        approvals.escalations_router, security.router, audit.router, audit.admin_router,
                        webhooks.router, rehearsals.agent_router, rehearsals.router])
    for handler in _handlers(router):
        document_problems(handler)
    return router


def _handlers(router: Router) -> Iterator[HTTPRouteHandler]:
    """The router's own copies of its handlers (Litestar copies a handler into each router it joins)."""
    for route in router.routes:
        if isinstance(route, HTTPRoute):
            yield from route.route_handlers


GUARDED_PROBLEMS = (401, 403, 429, 503)  # no or a bad key, a refused role, over the rate limit, database down
_NOT_INPUT = frozenset({"caller", "principal", "session", "request", "state", "scope", "headers", "cookies"})


def document_problems(handler: HTTPRouteHandler) -> None:
    """Add to ``handler``'s OpenAPI responses the problems every guarded route can answer (401, 403, 429,
    503), 404 when its path names an object, 400/413/422 when it reads a body, 422 when it takes parameters
    (and a problem-shaped 400 in place of Litestar's own wherever Litestar documents one).
    Problems only some routes answer (409, 402, ...) are in the handler's own ``responses``, kept as given.
    A body the handler lets a caller leave out is documented as not required."""
    statuses = set(GUARDED_PROBLEMS)
    path_params = {name for path in handler.paths for name in re.findall(r"\{([^}:]+)", path)}
    dependencies = {name for layer in handler.ownership_layers for name in (layer.dependencies or {})}
    inputs = set(handler.parsed_fn_signature.parameters) - _NOT_INPUT - dependencies
    if path_params:
        statuses.add(404)
    if inputs & {"data", "body"}:
        statuses |= {400, 413, 422}
    elif inputs:
        statuses.add(422)
    if inputs or path_params:
        statuses.add(400)  # Litestar documents one for any route with inputs, in its own (non-problem) shape
    handler.responses = {**problem_responses(statuses), **(handler.responses or {})}
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is not None and data.has_default and handler.operation_class is Operation:
        handler.operation_class = OptionalBodyOperation  # the body may be left out


@dataclass(frozen=True, slots=True)
class RouteRoles:
    """One method of one route: who may call it. ``roles`` is empty for a public route (health, schema)."""

    method: str
    path: str
    roles: tuple[str, ...]
    tenant_scoped: bool  # acts inside the caller's tenant (False: operator routes and public ones)


def route_table(app: Litestar) -> list[RouteRoles]:
    """Every HTTP route of ``app`` with the roles it admits, sorted by path then method."""
    rows = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            guarded = role_guard in (handler.resolve_guards() or [])
            allowed = declared_roles(handler.opt) if guarded else ()
            for method in sorted(handler.http_methods):
                if method in ("HEAD", "OPTIONS"):
                    continue
                rows.append(RouteRoles(method, route.path, allowed, bool(allowed) and allowed != ("operator",)))
    return sorted(rows, key=lambda r: (r.path, r.method))


SCHEMA_PREFIX = "/schema"  # the OpenAPI document and its viewers: one row in the markdown table


def display_path(path: str) -> str:
    """A route path as the docs write it: ``/v1/runs/{run_id:str}`` -> ``/v1/runs/{run_id}``."""
    return re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", path)


def route_table_markdown(app: Litestar) -> str:
    """:func:`route_table` as a markdown table (method, path, roles, tenant-scoped), the README's
    "Routes and roles" section; the OpenAPI document and its viewers (``/schema/*``) are one row."""
    lines = ["| method | path | roles | tenant-scoped |", "|---|---|---|---|"]
    schema_listed = False
    for row in route_table(app):
        if row.path == SCHEMA_PREFIX or row.path.startswith(SCHEMA_PREFIX + "/"):
            if schema_listed:
                continue
            schema_listed = True
            path = f"{SCHEMA_PREFIX}/*"
        else:
            path = display_path(row.path)
        who = ", ".join(row.roles) if row.roles else "none (no API key)"
        lines.append(f"| `{row.method}` | `{path}` | {who} | {'yes' if row.tenant_scoped else 'no'} |")
    return "\n".join(lines) + "\n"
