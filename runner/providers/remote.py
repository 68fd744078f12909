"""What the HTTP model providers share: :class:`ModelConfig`, cost, and one retrying call.

:class:`RemoteProvider` sends a provider request through the
:class:`~runner.tools.egress.EgressClient`, retries it per :mod:`runner.tools.retry`
(a completion has no side effect, so every retryable failure is retried), validates the JSON
answer with :mod:`runner.tools.validate`, and reports failures as StepFailed: ``dependency``
(the engine then tries the step's ``fallbacks``), ``auth`` (escalate, naming the key's secret)
or :class:`~runner.tools.retry.RetryLater` (also ``dependency``) for long backoffs.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.errors import SchemaInvalid, StepFailed
from runner.jsonschemas import validator_for
from runner.providers.base import ModelRequest, ModelResponse, Usage
from runner.tools.breaker import CircuitBreaker
from runner.tools.egress import EgressClient
from runner.tools.guard import GuardedEndpoint
from runner.tools.retry import RELEASE_THRESHOLD_S, RetryDecision, RetryPolicy
from tenants.kit.addresses import check_host
from tenants.kit.logging import register_secret
from tenants.secrets.names import NAME_PATTERN as SECRET_NAME_PATTERN

__all__ = ["ModelConfig", "RemoteProvider", "SecretResolver", "parse_structured_output"]

SecretResolver = Callable[[str], str]
_MTOK = Decimal(1_000_000)
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```\s*$", re.S)


class ModelConfig(BaseModel):
    """A model alias as a tenant configures it (``/v1/models``).

    Prices are USD per million tokens; ``None`` means unpriced, which is not free: the engine
    must refuse an unpriced model when a money budget applies (see :attr:`priced`).
    ``price_cached_in_per_mtok`` (optional) prices input tokens the provider reports as read from
    its prompt cache; without it they cost ``price_in_per_mtok`` like any input token.
    ``max_tokens_param`` and ``send_temperature`` adapt OpenAI-compatible requests to models that
    want ``max_completion_tokens`` or reject a temperature (OpenAI's reasoning models).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    provider: Literal["openai", "anthropic", "sandbox"]
    base_url: str | None = None
    model: str | None = None
    api_key_secret: str | None = Field(default=None, pattern=SECRET_NAME_PATTERN.pattern)
    price_in_per_mtok: Decimal | None = Field(default=None, ge=0)
    price_out_per_mtok: Decimal | None = Field(default=None, ge=0)
    price_cached_in_per_mtok: Decimal | None = Field(default=None, ge=0)
    timeout_s: float = Field(default=60.0, gt=0, le=600)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    anthropic_version: str = "2023-06-01"
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    send_temperature: bool = True

    @model_validator(mode="after")
    def _complete(self) -> ModelConfig:
        if self.provider != "sandbox":
            missing = [n for n in ("model", "api_key_secret") if getattr(self, n) is None]
            if self.provider == "openai" and self.base_url is None:
                missing.append("base_url")
            if missing:
                raise ValueError(f"provider {self.provider!r} needs {', '.join(missing)}")
        if self.base_url is not None and not self.base_url.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        if (self.price_in_per_mtok is None) != (self.price_out_per_mtok is None):
            raise ValueError("set both prices or neither (unpriced)")
        if self.price_cached_in_per_mtok is not None and self.price_in_per_mtok is None:
            raise ValueError("price_cached_in_per_mtok needs price_in_per_mtok and price_out_per_mtok")
        return self

    def refused_hosts(self, *, allow_loopback: bool) -> list[tuple[str, str]]:
        """(field, why) when ``base_url`` aims at a host that must not be used (see tenants.kit.addresses)."""
        if self.base_url is None:
            return []
        why = check_host(urlsplit(self.base_url).hostname or "", allow_loopback=allow_loopback)
        return [] if why is None else [("base_url", why)]

    @property
    def priced(self) -> bool:
        """Whether calls of this model have a known cost."""
        return self.price_in_per_mtok is not None and self.price_out_per_mtok is not None

    def cost(self, usage: Usage) -> Decimal | None:
        """The USD cost of ``usage`` (exact Decimal), or None for an unpriced model.

        Cached input tokens (a part of ``usage.input_tokens``) cost ``price_cached_in_per_mtok``
        when it is set.
        """
        if self.price_in_per_mtok is None or self.price_out_per_mtok is None:
            return None
        cached = min(max(usage.cached_input_tokens, 0), max(usage.input_tokens, 0))
        cached_price = self.price_cached_in_per_mtok if self.price_cached_in_per_mtok is not None \
            else self.price_in_per_mtok
        return ((usage.input_tokens - cached) * self.price_in_per_mtok + cached * cached_price
                + usage.output_tokens * self.price_out_per_mtok) / _MTOK


def parse_structured_output(text: str, schema: dict[str, Any] | None = None) -> Any:
    """Parse a model's JSON answer (tolerating a ```json fence) and check it against ``schema``.

    Raises StepFailed("validation") so the engine can retry with feedback: a wrong answer is
    the model's fault, not the dependency's.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except ValueError as exc:
        raise StepFailed("validation", f"model output is not JSON: {exc}",
                         details={"output_head": text[:200]}) from None
    if schema is not None:
        try:
            error = validator_for(schema).best_violation(value)
        except SchemaInvalid as exc:
            raise StepFailed("validation", f"the output schema cannot be used: {exc.message}") from None
        if error is not None:
            path = error.json_path
            raise StepFailed("validation", f"model output does not match the schema at {path}: "
                             f"{error.message[:200]}", details={"json_path": path})
    return value


class RemoteProvider:
    """Base of the HTTP providers: subclasses build the request and read the answer."""

    name = "remote"
    response_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, config: ModelConfig, client: EgressClient, secrets: SecretResolver, *,
                 breaker: CircuitBreaker | None = None, breaker_key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random,
                 release_threshold_s: float = RELEASE_THRESHOLD_S) -> None:
        self.config = config
        self._secrets = secrets
        self._endpoint = GuardedEndpoint(client, breaker, breaker_key or f"model|{config.alias}", sleep=sleep,
                                         rng=rng, release_threshold_s=release_threshold_s)

    @property
    def attempts(self) -> list[RetryDecision]:
        """The attempts of this thread's latest ``complete`` (also when it raised)."""
        return self._endpoint.attempts

    # Subclasses set path (and default_base_url) and reader, and implement headers and payload.
    default_base_url = ""
    path = ""  # appended to the config's base_url (or the provider's default)
    reader: ClassVar[Callable[..., ModelResponse]]  # (data, request, *, provider, default_model) -> answer

    def endpoint(self) -> str:
        """The URL to POST to."""
        return f"{(self.config.base_url or self.default_base_url).rstrip('/')}{self.path}"

    def headers(self, api_key: str) -> dict[str, str]:
        """Request headers carrying ``api_key``."""
        raise NotImplementedError

    def payload(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body for ``request``."""
        raise NotImplementedError

    def read(self, data: Any, request: ModelRequest) -> ModelResponse:
        """The normalised answer (cost and latency not yet set) from a validated response body."""
        return self.reader(data, request, provider=self.name, default_model=self.config.model or "")

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Send ``request``, retrying per the config; raise StepFailed when no answer could be had.

        An answer that stopped early, refused or was filtered is returned with its
        ``finish_reason`` (and its usage and cost: the tokens were spent); see
        :func:`runner.providers.finish.finish_failure`.
        """
        started = time.perf_counter()
        secret_name = self.config.api_key_secret or ""
        try:
            api_key = self._secrets(secret_name)
        except LookupError:
            raise StepFailed("auth", f"model {self.config.alias!r}: secret '{secret_name}' is not available",
                             action="escalate", details={"secret": secret_name}) from None
        register_secret([api_key])
        url, headers, body = self.endpoint(), self.headers(api_key), self.payload(request)
        data, _ = self._endpoint.retrying(lambda _number: self._attempt(url, headers, body),
                                          policy=self.config.retry, what=f"model {self.config.alias!r}")
        response = self.read(data, request)
        cost = self.config.cost(response.usage)
        return replace(response, cost_usd=cost if cost is not None else Decimal(0),
                       latency_ms=(time.perf_counter() - started) * 1000)

    def _attempt(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        alias = self.config.alias
        try:
            return self._endpoint.send(f"model {alias!r}", "POST", url, headers=headers, json=body,
                                       timeout_s=self.config.timeout_s, content_type="application/json",
                                       schema=self.response_schema)
        except StepFailed as exc:
            if "breaker" in exc.details or exc.details.get("timed_out"):
                raise
            if exc.category == "auth":
                secret = self.config.api_key_secret
                where = exc.details.get("url", url)
                raise StepFailed(
                    "auth", f"model {alias!r}: {where} answered {exc.details.get('status')}; "
                    f"check the API key (secret '{secret}')", action="escalate",
                    details={**exc.details, "secret": secret}) from None
            raise StepFailed(exc.category, f"model {alias!r}: {exc.reason}", action=exc.action,
                             details=exc.details) from None
