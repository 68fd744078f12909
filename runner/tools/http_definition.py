"""What a tenant declares for an HTTP tool (``PUT /v1/tools/{name}``): :class:`ToolDefinition`, its auth
variants, and :func:`render_request`, which turns a call's args into the exact request (URL placeholders are
percent-encoded as one path segment each, so ``/`` and ``..`` cannot escape the path; scheme and host are
literal, so the host a tool reaches is known when it is declared). :mod:`runner.tools.http` runs it."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from runner.errors import SchemaInvalid, StepFailed, TemplateError
from runner.jsonschemas import check_schema
from runner.templating import render
from runner.tools.retry import RetryPolicy
from tenants.kit.addresses import check_host
from tenants.secrets.names import NAME_PATTERN as SECRET_NAME_PATTERN

__all__ = ["BearerAuth", "HeaderAuth", "OAuth2ClientCredentials", "ToolAuth", "ToolDefinition", "render_request"]

_TOOL_NAME = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
_SECRET_NAME = SECRET_NAME_PATTERN.pattern  # the one rule (tenants.secrets.service)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "authorization",
                               "proxy-authorization", "cookie"})
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_DESCRIPTION_MAX = 4096  # shown to models: keep it a description, not a prompt
_SCHEMA_MAX_BYTES = 65_536
_SCHEMA_MAX_DEPTH = 32


def _depth(value: Any, level: int = 0) -> int:
    """How deeply ``value`` nests (stops counting past the limit)."""
    if level > _SCHEMA_MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BearerAuth(_Strict):
    """``Authorization: Bearer <secret>``."""

    type: Literal["bearer"]
    secret: Annotated[str, Field(pattern=_SECRET_NAME)]


class HeaderAuth(_Strict):
    """``<header>: <secret>`` (an API key header)."""

    type: Literal["header"]
    header: str = "X-Api-Key"
    secret: Annotated[str, Field(pattern=_SECRET_NAME)]

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value) or value.lower() in {"host", "content-length", "transfer-encoding"}:
            raise ValueError(f"{value!r} is not a usable header name")
        return value


class OAuth2ClientCredentials(_Strict):
    """OAuth2 client-credentials grant; the access token is cached and refreshed once on 401."""

    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id_secret: Annotated[str, Field(pattern=_SECRET_NAME)]
    client_secret_secret: Annotated[str, Field(pattern=_SECRET_NAME)]
    scope: str | None = None
    client_auth: Literal["basic", "post"] = "basic"  # RFC 6749 §2.3.1: servers must support basic

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or "{{" in value:
            raise ValueError("token_url must be a literal http(s) URL")
        return value


ToolAuth = Annotated[BearerAuth | HeaderAuth | OAuth2ClientCredentials, Field(discriminator="type")]


class ToolDefinition(_Strict):
    """A tenant-declared HTTP action (what ``/v1/tools`` stores)."""

    name: Annotated[str, Field(pattern=_TOOL_NAME, max_length=128)]
    description: str = Field(default="", max_length=_DESCRIPTION_MAX)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Literal["json_args", "none"] = "json_args"
    auth: ToolAuth | None = None
    side_effect: bool = False
    idempotent: bool = False
    idempotency_header: str = "Idempotency-Key"
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    expect_content_type: str | None = "application/json"
    response_schema: dict[str, Any] | None = None
    args_schema: dict[str, Any] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise ValueError("url must start with http:// or https://")
        authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority = rest[:authority_end]
        if not authority or "{{" in authority or "}}" in authority:
            raise ValueError("the url's host must be literal (templates only in the path and query)")
        if "@" in authority:
            raise ValueError("credentials in the url are not allowed (use auth)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Midwatch (credentials go in auth)")
        return value

    @field_validator("idempotency_header")
    @classmethod
    def _idempotency_header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value) or value.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{value!r} is not a usable header name")
        return value

    @field_validator("response_schema", "args_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is None:
            return value
        what = info.field_name
        if len(json.dumps(value)) > _SCHEMA_MAX_BYTES:
            raise ValueError(f"{what} is larger than {_SCHEMA_MAX_BYTES} bytes")
        if _depth(value) > _SCHEMA_MAX_DEPTH:
            raise ValueError(f"{what} is nested deeper than {_SCHEMA_MAX_DEPTH} levels")
        try:
            check_schema(value)
        except SchemaInvalid as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise ValueError(f"{what} is not a valid JSON schema: {message[:300]}") from None
        if what == "args_schema" and value.get("type") != "object":
            raise ValueError('args_schema must describe an object (top-level "type": "object"): '
                             "tool arguments are always a JSON object")
        return value

    def refused_hosts(self, *, allow_loopback: bool) -> list[tuple[str, str]]:
        """(field, why) for each URL of this tool whose host must not be used (see tenants.kit.addresses).

        The upload-time check: metadata, private and (unless ``allow_loopback``) loopback hosts, and
        IP literals in non-canonical forms. The egress client checks resolved addresses again at every call.
        """
        urls = [("url", self.url)]
        if isinstance(self.auth, OAuth2ClientCredentials):
            urls.append(("auth.token_url", self.auth.token_url))
        return [(name, why) for name, url in urls
                if (why := check_host(urlsplit(url).hostname or "", allow_loopback=allow_loopback)) is not None]

    @property
    def host(self) -> str:
        """The URL's ``host[:port]`` (for the breaker key and the scope's egress list)."""
        rest = self.url.partition("://")[2]
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        return rest[:end].lower()


def _segment(expr: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        raise StepFailed("validation", f"URL placeholder {{{{ {expr} }}}} must be a string or number, "
                         f"got {type(value).__name__}")
    if text in ("", ".", ".."):
        raise StepFailed("validation",
                         f"URL placeholder {{{{ {expr} }}}} rendered to {text!r}, not a path segment")
    return quote(text, safe="")


def render_request(definition: ToolDefinition, args: Any) -> tuple[str, dict[str, str], Any]:
    """The (url, headers, json body) for ``args``. Raises StepFailed("validation") on bad args."""
    context = {"args": args}
    try:
        url = _PLACEHOLDER.sub(
            lambda m: _segment(m.group(1).strip(), render("{{" + m.group(1) + "}}", context)), definition.url)
        query = {k: str(render(v, context)) for k, v in definition.query.items()}
        headers = {k: str(render(v, context)) for k, v in definition.headers.items()}
    except TemplateError as exc:
        raise StepFailed("validation", f"{definition.name}: cannot build the request: {exc}") from None
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise StepFailed("validation", f"{definition.name}: header {name!r} would contain a line break")
    if query:
        url += ("&" if "?" in url else "?") + urlencode(query)
    body = args if definition.body == "json_args" and definition.method in ("POST", "PUT", "PATCH") else None
    return url, headers, body
