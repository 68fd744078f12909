"""RFC 9457 problem+json for every error, with a stable ``code``; never a traceback."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from platform_api.schemas.common import Problem
from runner.errors import SchemaInvalid, SpecInvalid
from tenants.kit.db import is_transient_db_error
from tenants.kit.errors import MidwatchError, scrub_reason
from tenants.kit.logging import get_logger

__all__ = ["PROBLEM_JSON", "exception_handlers", "problem", "problem_responses"]

PROBLEM_JSON = "application/problem+json"
log = get_logger("api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}
_TITLES = {
    "malformed_json": "Malformed JSON",
    "validation_error": "The request is not valid",
    "spec_invalid": "The agent spec is not valid",
    "payload_too_large": "The request body is too large",
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed",
    "not_found": "Not found",
}


_WHEN = {
    400: "malformed_json: the body is not valid JSON (or not UTF-8)",
    401: "unauthorized: no API key, or an unknown, revoked or expired one",
    402: "budget_exhausted: a budget limit refuses the work",
    403: "forbidden: the key's role may not call this route, or its tenant is suspended",
    404: "not_found: no such object in the caller's tenant (another tenant's object is exactly as missing)",
    405: "method_not_allowed",
    409: "conflict: the object's state refuses the action (codes: conflict, idempotency_conflict, "
         "key_already_rotated)",
    413: "payload_too_large: the body is over the limit",
    415: "unsupported_media_type",
    422: "validation_error (or spec_invalid, schema_invalid): the request is not valid; errors lists each problem",
    429: "rate_limited: over the key's per-minute limit, or too many failed authentications; see Retry-After",
    503: "unavailable: the database (or a dependency) is briefly unavailable; see Retry-After",
}


def problem_responses(statuses: Iterable[int]) -> dict[int, ResponseSpec]:
    """OpenAPI responses for error ``statuses``: each a problem+json :class:`Problem` (for a route's
    ``responses``)."""
    return {status: ResponseSpec(data_container=Problem, generate_examples=False, media_type=PROBLEM_JSON,
                                 description=_WHEN.get(status, _HTTP_CODES.get(status, "error")))
            for status in sorted(statuses)}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> Response[dict[str, Any]]:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": f"urn:midwatch:error:{code}",
        "title": _TITLES.get(code, code.replace("_", " ").capitalize()),
        "status": status,
        "code": code,
        "detail": scrub_reason(detail),  # whatever raised it, never SQL or a traceback
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _midwatch(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, MidwatchError)
    retry_after = exc.extra.get("retry_after_s")
    headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None  # 429 and 503
    return problem(exc.status, exc.code, exc.detail, headers, **exc.extra)


def _spec_invalid(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, SpecInvalid)
    errors = [i.model_dump() for i in exc.issues]
    return problem(422, "spec_invalid", f"the agent spec has {len(errors)} error(s)", errors=errors)


def _schema_invalid(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A stored JSON Schema that can no longer be used (checked again where it is compiled)."""
    assert isinstance(exc, SchemaInvalid)
    return problem(422, "schema_invalid", exc.message, path=exc.path or None)


def _validation(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, ValidationException)
    errors = []
    for entry in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(entry, dict):
            key = entry.get("key")
            message = str(entry.get("message", ""))
            if key == "data" and entry.get("source") == "body":
                message = "a JSON request body is required"
            errors.append({"path": str(key) if key else "", "message": message})
    detail = "; ".join(f"{e['path'] or '(body)'}: {e['message']}" for e in errors) or str(exc.detail)
    return problem(422, "validation_error", detail, errors=errors)


def _http(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    detail = str(exc.detail)
    code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal")
    if status == 400 and isinstance(exc.__cause__, SerializationException):  # the body failed to decode
        code = "malformed_json"
    if status >= 500:
        log.error("http_error", status=status, detail=detail)
        detail = "internal error"
    return problem(status, code, detail, headers=dict(exc.headers) if exc.headers else None)  # e.g. 405's Allow


def _undecodable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Litestar lets these escape while decoding a JSON body: bad UTF-8, nesting deeper than the decoder allows."""
    if isinstance(exc, UnicodeDecodeError):
        return problem(400, "malformed_json", "the request body is not valid UTF-8")
    if isinstance(exc, RecursionError) and "deserializing" in str(exc):
        return problem(400, "malformed_json", "the JSON body is nested too deeply")
    return _internal(request, exc)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if is_transient_db_error(exc):  # the database is restarting or unreachable: say so, and when to retry
        log.warning("database_unavailable", path=request.url.path, error_type=type(exc).__name__)
        return problem(503, "unavailable", "the database is briefly unavailable; retry shortly",
                       headers={"Retry-After": "2"}, retry_after_s=2)
    log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal",
                   "internal error; the operator's logs have the details")


exception_handlers: dict[type[Exception], Any] = {
    MidwatchError: _midwatch,
    SpecInvalid: _spec_invalid,
    SchemaInvalid: _schema_invalid,
    ValidationException: _validation,
    HTTPException: _http,
    UnicodeDecodeError: _undecodable,
    RecursionError: _undecodable,
    Exception: _internal,
}
