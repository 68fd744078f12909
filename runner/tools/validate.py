"""Response validation: nothing unvalidated from a dependency reaches the next step.

:func:`validate_response` turns an :class:`~runner.tools.egress.EgressResponse` into data or a
StepFailed:

- an error status → category from :func:`~runner.tools.retry.classify_status` (``Retry-After``
  parsed into ``details["retry_after_s"]``);
- a truncated body, the wrong content type (an HTML error page with status 200), invalid JSON
  → ``dependency`` (retryable: proxies and gateways produce these transiently);
- a JSON schema mismatch → ``dependency``, not retryable, naming the JSON path.

Every failure carries the first bytes of the body, redacted, in ``details["body_head"]``
(and the reason), so the decision log shows what came back without leaking credentials.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx

from runner.errors import FailureCategory, SchemaInvalid, StepFailed
from runner.jsonschemas import validator_for
from runner.tools.egress import EgressResponse, display_url
from runner.tools.retry import classify_status, parse_retry_after
from tenants.kit.logging import redact

__all__ = ["BODY_HEAD_BYTES", "body_head", "is_json_media_type", "media_type", "validate_response"]

BODY_HEAD_BYTES = 200


def body_head(body: bytes, limit: int = BODY_HEAD_BYTES) -> str:
    """The first ``limit`` bytes of ``body`` as text, secrets redacted, ``...`` when cut."""
    text = body[:limit].decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)
    redacted = str(redact(text))
    return redacted + ("..." if len(body) > limit else "")


def media_type(headers: httpx.Headers) -> str:
    """The response's media type, lowercased, without parameters ("" when absent)."""
    return str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()


def is_json_media_type(value: str) -> bool:
    """``application/json`` or any ``+json`` structured syntax (``application/problem+json``)."""
    return value == "application/json" or (value.startswith("application/") and value.endswith("+json"))


def _content_type_ok(actual: str, expected: str) -> bool:
    wanted = expected.split(";", 1)[0].strip().lower()
    if wanted == "application/json":
        return is_json_media_type(actual)
    if wanted.endswith("/*"):
        return actual.startswith(wanted[:-1])
    return actual == wanted


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def validate_response(resp: EgressResponse, expect_content_type: str | None = "application/json",
                      schema: dict[str, Any] | None = None, *, now: datetime | None = None) -> Any:
    """Return the response's validated payload or raise StepFailed.

    With a JSON ``expect_content_type`` (or any ``schema``) the body is parsed as JSON and
    checked against ``schema``. ``expect_content_type=None`` accepts any content type and
    returns what the response says it is: parsed JSON for a JSON media type, else as below.
    A text body (``text/*``, XML, form data, or no content type) is returned as a string; any
    other body as ``{"content_type", "size", "base64"}``, so a step's output is always JSON. A 204
    or empty body is None. ``now`` (for HTTP-date ``Retry-After``) defaults to the current UTC time.
    """
    check = _Checker(resp)
    check.status(now)
    if expect_content_type is not None and resp.status != 204 and resp.body:
        actual = check.base["content_type"]
        if not _content_type_ok(actual, expect_content_type):
            got = actual or "no content type"
            raise check.fail("dependency", f"expected {expect_content_type}, got {got}",
                             retryable=True, kind="content_type")
    declared = expect_content_type if expect_content_type is not None else check.base["content_type"]
    wants_json = schema is not None or is_json_media_type(declared.split(";", 1)[0].strip().lower())
    if not wants_json:
        return _plain_payload(resp, declared)
    value = check.json()
    if schema is not None:
        check.schema(value, schema)
    return value


_TEXT_TYPES = ("application/xml", "application/x-www-form-urlencoded", "application/javascript")


def _plain_payload(resp: EgressResponse, media: str) -> Any:
    """A non-JSON body as JSON-storable data: text as a string, anything else base64-encoded."""
    if resp.status == 204 or not resp.body:
        return None
    media = media.split(";", 1)[0].strip().lower()
    if not media or media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+xml"):
        return resp.body.decode(resp.headers.encoding or "utf-8", errors="replace")
    return {"content_type": media, "size": len(resp.body), "base64": base64.b64encode(resp.body).decode("ascii")}


class _Checker:
    """The checks of :func:`validate_response`, sharing the failure details they report."""

    def __init__(self, resp: EgressResponse) -> None:
        self.resp = resp
        self.where = f"{resp.method} {display_url(httpx.URL(resp.url))}"
        self.head = body_head(resp.body)
        self.base: dict[str, Any] = {"status": resp.status, "content_type": media_type(resp.headers),
                                     "body_head": self.head, "url": self.where}

    def fail(self, category: FailureCategory, what: str, *, retryable: bool, with_body: bool = True,
             **extra: Any) -> StepFailed:
        reason = f"{self.where}: {what}" + (f"; body starts: {self.head!r}" if with_body else "")
        details = {**self.base, "retryable": retryable, "sent": True, **extra}
        return StepFailed(category, reason, details=details)

    def status(self, now: datetime | None) -> None:
        resp = self.resp
        if resp.status >= 400:
            category, retryable = classify_status(resp.status)
            retry_after = parse_retry_after(resp.headers.get("retry-after"), now or datetime.now(UTC))
            phrase = httpx.codes.get_reason_phrase(resp.status)
            raise self.fail(category, f"answered {resp.status} {phrase}", retryable=retryable,
                            retry_after_s=retry_after)
        if resp.status >= 300:
            raise self.fail("dependency", f"answered {resp.status} (redirect not followed)", retryable=False)
        if resp.truncated:
            raise self.fail("dependency", f"response too large: truncated at {len(resp.body)} bytes",
                            retryable=False, kind="too_large")

    def json(self) -> Any:
        if self.resp.status == 204 or not self.resp.body.strip():
            return None
        try:
            return json.loads(self.resp.body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise self.fail("dependency", f"invalid JSON ({str(exc)[:120]})", retryable=True,
                            kind="invalid_json") from None

    def schema(self, value: Any, schema: dict[str, Any]) -> None:
        try:
            validator = validator_for(schema)
        except SchemaInvalid as exc:
            raise StepFailed("internal", f"{self.where}: the response schema is invalid: {exc.message[:200]}",
                             details=dict(self.base)) from None
        error = validator.best_violation(value)
        if error is not None:
            path = error.json_path
            message = str(redact(error.message))[:200]
            raise self.fail("dependency", f"response does not match the schema at {path}: {message}",
                            retryable=False, with_body=False, kind="schema", json_path=path)
