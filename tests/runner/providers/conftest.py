"""Provider tests: every model request that reaches the fake upstream, and every answer it gives, is
checked against the official SDKs' types when the test ends (see ``sdk_contract``)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from runner.providers.anthropic import AnthropicProvider
from runner.providers.openai_compat import OpenAICompatProvider
from runner.providers.remote import ModelConfig
from runner.sandbox_upstream import FaultyUpstream
from runner.tools.egress import EgressClient, EgressPolicy
from tests.runner.providers import sdk_contract

MODEL_ANSWERS = {"chat", "model_turn", "model_policy"}
SECRETS = {"openai_key": "sk-test-0123456789", "anthropic_key": "ak-test-0123456789"}


def check_contract(up: FaultyUpstream) -> int:
    """Validate every model request and 200 answer the upstream saw; return how many were checked."""
    checked = 0
    for request in up.requests:
        path = request.path.split("?", 1)[0]
        if path.endswith("/chat/completions"):
            sdk_contract.openai_request(request.json())
        elif path.endswith("/v1/messages"):
            sdk_contract.anthropic_request(request.json())
        else:
            continue
        checked += 1
    for response in up.responses:
        if response.status != 200 or response.fault not in MODEL_ANSWERS:
            continue  # transport faults (HTML error pages, odd JSON ...) are not model answers
        if response.path.endswith("/chat/completions"):
            sdk_contract.openai_response(response.json())
        elif response.path.endswith("/v1/messages"):
            sdk_contract.anthropic_response(response.json())
    return checked


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    """The fault-injecting upstream; on teardown every model request and answer must match the SDK types."""
    with FaultyUpstream() as up:
        yield up
        check_contract(up)


def model_config(up: FaultyUpstream, provider: str = "openai", **overrides: Any) -> ModelConfig:
    """A priced alias pointing at ``up`` (OpenAI-compatible at /v1, Anthropic at the root)."""
    fields: dict[str, Any] = {
        "alias": "careful", "provider": provider, "model": "test-model",
        "base_url": up.url + "/v1" if provider == "openai" else up.url,
        "api_key_secret": "openai_key" if provider == "openai" else "anthropic_key",
        "price_in_per_mtok": Decimal("2.50"), "price_out_per_mtok": Decimal("10"),
        "timeout_s": 2, "retry": {"max_attempts": 3, "base_delay_s": 0, "max_delay_s": 0}}
    fields.update(overrides)
    return ModelConfig.model_validate(fields)


def provider_for(up: FaultyUpstream, provider: str = "openai",
                 **overrides: Any) -> OpenAICompatProvider | AnthropicProvider:
    """The provider for :func:`model_config`, talking to ``up`` over loopback."""
    client = EgressClient(EgressPolicy(allowed_hosts=[up.netloc], allow_loopback=True))
    cls = OpenAICompatProvider if provider == "openai" else AnthropicProvider
    return cls(model_config(up, provider, **overrides), client, SECRETS.__getitem__, sleep=lambda _: None)
