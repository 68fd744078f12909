"""Per-request observability: a request id on every log line and response, a server span when tracing is on.

- :class:`RequestContextMiddleware` takes the caller's ``X-Request-Id`` when it is a plain token (at most 64
  of ``A-Z a-z 0-9 . _ : -``; anything else is replaced, so a header cannot forge log content), or makes
  one, and binds it for the request's log lines; the auth dependency adds ``tenant_id`` once the key is known
  (:func:`tenants.kit.logging.annotate_request`). With tracing on it opens the request's server span,
  continuing the caller's ``traceparent``.
- :func:`add_request_id_header` (a ``before_send`` hook, so it also sees 404s and errors raised before
  routing) returns the id as ``X-Request-Id``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from tenants.kit.errors import Forbidden, Unauthorized
from tenants.kit.logging import get_logger, request_context
from tenants.kit.settings import Settings
from tenants.kit.tracing import server_span

__all__ = ["REQUEST_ID_HEADER", "RequestContextMiddleware", "add_request_id_header", "check_metrics_access",
           "request_id_of"]

log = get_logger("api")
REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_STATE_KEY = "midwatch_request_id"


def request_id_of(scope: Scope) -> str:
    """The request's id: the one already chosen, the caller's if well-formed, or a new one."""
    state: dict[str, Any] = scope.setdefault("state", {})
    found = state.get(_STATE_KEY)
    if found:
        return str(found)
    given = ""
    for name, value in scope.get("headers", ()):
        if name.lower() == REQUEST_ID_HEADER.encode():
            given = value.decode("latin-1")
            break
    request_id = given if _VALID_ID.fullmatch(given) else secrets.token_hex(16)
    state[_STATE_KEY] = request_id
    return request_id


class RequestContextMiddleware(ASGIMiddleware):
    """Binds ``request_id`` (and, with tracing on, a server span) around each HTTP request."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request_id = request_id_of(scope)
        method = str(scope.get("method", "GET"))
        route = str(scope.get("path_template") or "")
        status: dict[str, int] = {}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        with request_context(request_id), server_span(method=method, route=route, headers=scope.get("headers", ()),
                                                      request_id=request_id) as span:
            try:
                await next_app(scope, receive, capture)
            finally:
                code = status.get("code", 500)
                span.set({"http.response.status_code": code})
                if code >= 500:
                    span.fail(None, f"HTTP {code}")
                # An access line at debug level (MIDWATCH_LOG_LEVEL=debug), with the request id and tenant bound.
                log.debug("http_request", method=method, route=route, status=code,
                          duration_ms=round((time.perf_counter() - started) * 1000, 2))


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """``before_send`` hook: every HTTP response carries ``X-Request-Id``."""
    if message["type"] == "http.response.start" and scope.get("type") == ScopeType.HTTP:
        MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id_of(scope)


def check_metrics_access(settings: Settings, authorization: str | None) -> None:
    """The API's /metrics shows tenant ids and names, agents, hosts and secret names, and the API is public:
    with ``MIDWATCH_METRICS_TOKEN`` only ``Authorization: Bearer <token>`` may read it; without one, only an
    embedded install (``midwatch up``) serves it openly. Raises ``Unauthorized`` / ``Forbidden`` otherwise."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        if settings.env == "production":
            raise Forbidden("/metrics is off on a production API until MIDWATCH_METRICS_TOKEN is set (Prometheus "
                            "then sends it as a bearer token); worker and scheduler health ports serve metrics")
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("/metrics needs Authorization: Bearer <MIDWATCH_METRICS_TOKEN>")
