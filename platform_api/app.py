"""The Litestar application: the guarded /v1 routers, problem+json errors, health and metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from litestar import Litestar, MediaType, Request, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.pydantic import PydanticPlugin

from platform_api.observability import RequestContextMiddleware, add_request_id_header, check_metrics_access
from platform_api.openapi import StrictModelsPlugin
from platform_api.problems import exception_handlers, problem, problem_responses
from platform_api.routes import api_router
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput, NotFound
from tenants.kit.settings import Settings
from tenants.observability.exposition import db_gauges_enabled, render_metrics

__all__ = ["create_app"]

ReadinessCheck = Callable[[], None]


def create_app(settings: Settings, readiness: Mapping[str, ReadinessCheck] | None = None) -> Litestar:
    """Build the API. ``readiness`` adds checks to ``/readyz`` (the broker's, from the composition root)."""
    checks: dict[str, ReadinessCheck] = {"database": _database_ready, **(readiness or {})}
    database_gauges = db_gauges_enabled(settings, "api")

    @get("/healthz", summary="Liveness: the process answers", tags=["health"], sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", sync_to_thread=True, summary="Readiness: database and broker reachable", tags=["health"],
         responses=problem_responses([503]))
    def readyz() -> Response[dict[str, Any]]:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unavailable: {type(exc).__name__}"
        if all(v == "ok" for v in results.values()):
            return Response({"status": "ok", "checks": results})
        return problem(503, "unavailable", "a dependency is unavailable", checks=results)

    @get("/metrics", summary="Prometheus metrics (every API process's event metrics and the database gauges)",
         description="Bearer MIDWATCH_METRICS_TOKEN when set; open only in embedded mode without one.",
         tags=["health"], media_type=MediaType.TEXT, sync_to_thread=True,
         security=[{}, {"metrics": []}], responses=problem_responses([401, 403]))
    def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        check_metrics_access(settings, request.headers.get("authorization"))
        body, content_type = render_metrics(settings, database=database_gauges)
        return Response(body, media_type=content_type)

    return Litestar(
        route_handlers=[healthz, readyz, metrics, api_router(settings)],  # /v1: guarded by declared roles
        before_request=_reject_bad_query,
        middleware=[RequestContextMiddleware()],
        before_send=[add_request_id_header],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]  # Litestar's handler map is invariant
        plugins=[StrictModelsPlugin(prefer_alias=True), PydanticPlugin(validate_strict=True, prefer_alias=True)],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Midwatch API", version="1", path="/schema",
            description="Run AI agents unattended for many tenants. Authenticate with "
                        "'Authorization: Bearer <api key>'. Errors are RFC 9457 problem+json with a stable 'code'.",
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="an API key"),
                "metrics": SecurityScheme(type="http", scheme="bearer", description="MIDWATCH_METRICS_TOKEN")}),
        ),
        debug=False,
    )


def _reject_bad_query(request: Request[Any, Any, Any]) -> None:
    """No object's name or id holds a NUL (PostgreSQL cannot even compare one): 404 in a path, 422 in a query.
    No query parameter of the API takes several values, so one given twice is a 422, not a silent pick of
    one of them (parameter pollution)."""
    if "\x00" in request.scope["path"]:
        raise NotFound("not found")
    query = request.scope["query_string"].decode("latin-1")
    if "\x00" in unquote_plus(query):
        raise InvalidInput("query parameters cannot contain NUL characters")
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"query parameter {repeated[0]!r} is given more than once", field=repeated[0])


def _database_ready() -> None:
    with unit_of_work() as session:  # plain SQL through the session: the API never imports SQLAlchemy
        session.connection().exec_driver_sql("SELECT 1")
