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
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.errors import StepFailed
from runner.providers.base import ModelRequest, ModelResponse, Usage
from runner.tools.breaker import CircuitBreaker
from runner.tools.egress import EgressBlocked, EgressClient
from runner.tools.retry import RELEASE_THRESHOLD_S, RetryDecision, RetryPolicy, run_with_retries
from runner.tools.validate import validate_response
from tenants.kit.logging import register_secret

__all__ = ["ModelConfig", "RemoteProvider", "SecretResolver", "parse_structured_output"]

SecretResolver = Callable[[str], str]
_MTOK = Decimal(1_000_000)
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```\s*$", re.S)


class ModelConfig(BaseModel):
    """A model alias as a tenant configures it (``/v1/models``).

    Prices are USD per million tokens; ``None`` means unpriced, which is not free: the engine
    must refuse an unpriced model when a money budget applies (see :attr:`priced`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    provider: Literal["openai", "anthropic", "sandbox"]
    base_url: str | None = None
    model: str | None = None
    api_key_secret: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    price_in_per_mtok: Decimal | None = Field(default=None, ge=0)
    price_out_per_mtok: Decimal | None = Field(default=None, ge=0)
    timeout_s: float = Field(default=60.0, gt=0, le=600)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    anthropic_version: str = "2023-06-01"

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
        return self

    @property
    def priced(self) -> bool:
        """Whether calls of this model have a known cost."""
        return self.price_in_per_mtok is not None and self.price_out_per_mtok is not None

    def cost(self, usage: Usage) -> Decimal | None:
        """The USD cost of ``usage`` (exact Decimal), or None for an unpriced model."""
        if self.price_in_per_mtok is None or self.price_out_per_mtok is None:
            return None
        return (usage.input_tokens * self.price_in_per_mtok
                + usage.output_tokens * self.price_out_per_mtok) / _MTOK


def parse_structured_output(text: str, schema: dict[str, Any] | None = None) -> Any:
    """Parse a model's JSON answer (tolerating a ```json fence) and check it against ``schema``.

    Raises StepFailed("validation") so the engine can retry with feedback: a wrong answer is
    the model's fault, not the dependency's.
    """
    import jsonschema
    from jsonschema.exceptions import best_match

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
        error = best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
        if error is not None:
            path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
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
        self._client = client
        self._secrets = secrets
        self._breaker = breaker
        self._breaker_key = breaker_key or f"model|{config.alias}"
        self._sleep = sleep
        self._rng = rng
        self._release_threshold_s = release_threshold_s
        self._local = threading.local()

    @property
    def attempts(self) -> list[RetryDecision]:
        """The attempts of this thread's latest ``complete`` (also when it raised)."""
        found: list[RetryDecision] = getattr(self._local, "attempts", [])
        return found

    # Subclasses implement these three.
    def endpoint(self) -> str:
        """The URL to POST to."""
        raise NotImplementedError

    def headers(self, api_key: str) -> dict[str, str]:
        """Request headers carrying ``api_key``."""
        raise NotImplementedError

    def payload(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body for ``request``."""
        raise NotImplementedError

    def read(self, data: Any) -> tuple[str, Usage, str]:
        """(text, usage, model id) from a validated answer."""
        raise NotImplementedError

    def finish_reason(self, data: Any) -> str | None:
        """Why the model stopped, from a validated answer (None if the provider does not say)."""
        return None

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Send ``request``, retrying per the config; raise StepFailed on failure."""
        started = time.perf_counter()
        secret_name = self.config.api_key_secret or ""
        try:
            api_key = self._secrets(secret_name)
        except LookupError:
            raise StepFailed("auth", f"model {self.config.alias!r}: secret '{secret_name}' is not available",
                             action="escalate", details={"secret": secret_name}) from None
        register_secret([api_key])
        url, headers, body = self.endpoint(), self.headers(api_key), self.payload(request)
        log: list[RetryDecision] = []
        self._local.attempts = log

        def attempt(_number: int) -> Any:
            return self._attempt(url, headers, body)

        data = run_with_retries(attempt, policy=self.config.retry, what=f"model {self.config.alias!r}",
                                log=log, sleep=self._sleep, rng=self._rng,
                                release_threshold_s=self._release_threshold_s)
        text, usage, model = self.read(data)
        cost = self.config.cost(usage)
        return ModelResponse(text=text, model=model, provider=self.name, usage=usage,
                             cost_usd=cost if cost is not None else Decimal(0),
                             latency_ms=(time.perf_counter() - started) * 1000, finish_reason=self.finish_reason(data))

    def _attempt(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        alias = self.config.alias
        if self._breaker is not None:
            decision = self._breaker.allow(self._breaker_key, time.time())
            if not decision.allowed:
                raise StepFailed("dependency", f"model {alias!r}: {decision.reason}",
                                 details={"breaker": decision.state, "breaker_retry_at": decision.retry_at,
                                          "retryable": False, "sent": False})
        try:
            response = self._client.request("POST", url, headers=headers, json=body,
                                            timeout_s=self.config.timeout_s)
            data = validate_response(response, "application/json", self.response_schema)
        except EgressBlocked:
            raise
        except StepFailed as exc:
            if self._breaker is not None and exc.category == "dependency" and exc.details.get("retryable"):
                self._breaker.record_failure(self._breaker_key, time.time(), exc.reason[:200])
            elif self._breaker is not None and "status" in exc.details:
                self._breaker.record_success(self._breaker_key, time.time())
            if exc.category == "auth":
                secret = self.config.api_key_secret
                where = exc.details.get("url", url)
                raise StepFailed(
                    "auth", f"model {alias!r}: {where} answered {exc.details.get('status')}; "
                    f"check the API key (secret '{secret}')", action="escalate",
                    details={**exc.details, "secret": secret}) from None
            raise StepFailed(exc.category, f"model {alias!r}: {exc.reason}", action=exc.action,
                             details=exc.details) from None
        if self._breaker is not None:
            self._breaker.record_success(self._breaker_key, time.time())
        return data
