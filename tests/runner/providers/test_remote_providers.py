"""OpenAI-compatible and Anthropic providers against the fault-injecting upstream."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from runner.errors import StepFailed
from runner.providers.anthropic import AnthropicProvider
from runner.providers.base import Message, ModelRequest
from runner.providers.factory import build_provider
from runner.providers.openai_compat import OpenAICompatProvider
from runner.providers.remote import ModelConfig, parse_structured_output
from runner.sandbox_upstream import (
    FaultyUpstream,
    anthropic_message,
    burst_503,
    chat,
    html_200,
    ok,
    status,
)
from runner.tools.egress import EgressClient, EgressPolicy

SECRETS = {"openai_key": "sk-test-0123456789", "anthropic_key": "ak-test-0123456789"}
REQUEST = ModelRequest(model="careful", messages=[Message("system", "Be brief."), Message("user", "Say hi")])


def config(upstream: FaultyUpstream, **overrides: Any) -> ModelConfig:
    fields: dict[str, Any] = {
        "alias": "careful", "provider": "openai", "base_url": upstream.url + "/v1", "model": "gpt-test",
        "api_key_secret": "openai_key",
        "price_in_per_mtok": Decimal("2.50"), "price_out_per_mtok": Decimal("10"),
        "timeout_s": 2, "retry": {"max_attempts": 3, "base_delay_s": 0, "max_delay_s": 0}}
    fields.update(overrides)
    return ModelConfig.model_validate(fields)


def client(upstream: FaultyUpstream) -> EgressClient:
    return EgressClient(EgressPolicy(allowed_hosts=[upstream.netloc], allow_loopback=True))


def openai(upstream: FaultyUpstream, **overrides: Any) -> OpenAICompatProvider:
    return OpenAICompatProvider(config(upstream, **overrides), client(upstream), SECRETS.__getitem__,
                                sleep=lambda _: None)


def test_a_chat_completion_records_usage_and_decimal_cost(upstream: FaultyUpstream) -> None:
    upstream.script("/v1/chat/completions", [chat("hello there", prompt_tokens=1200, completion_tokens=300)])
    response = openai(upstream).complete(REQUEST)
    assert response.text == "hello there" and response.provider == "openai" and response.model == "gpt-test"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1200, 300)
    assert response.cost_usd == Decimal("0.006")  # 1200 * 2.50/1M + 300 * 10/1M, exactly
    sent = upstream.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-test-0123456789"
    assert sent.json()["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "response_format" not in sent.json()


def test_an_output_schema_asks_for_json_schema_output(upstream: FaultyUpstream) -> None:
    schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    upstream.script("/v1/chat/completions", [chat({"text": "hi"})])
    response = openai(upstream).complete(ModelRequest(model="careful", messages=[Message("user", "x")],
                                                      output_schema=schema))
    assert upstream.requests[0].json()["response_format"]["json_schema"]["schema"] == schema
    assert parse_structured_output(response.text, schema) == {"text": "hi"}
    with pytest.raises(StepFailed, match=r"schema at \$\.text") as info:
        parse_structured_output('```json\n{"text": 5}\n```', schema)
    assert info.value.category == "validation"


def test_a_503_burst_is_retried_and_recorded(upstream: FaultyUpstream) -> None:
    upstream.script("/v1/chat/completions", [burst_503(2), chat("ok")])
    provider = openai(upstream)
    assert provider.complete(REQUEST).text == "ok"
    assert [a.decided for a in provider.attempts] == ["retry", "retry", "ok"]


@pytest.mark.parametrize("fault", [burst_503(10), html_200(), ok({"unexpected": True}), status(400)],
                         ids=["503s", "html", "wrong-shape", "400"])
def test_fallback_worthy_failures_raise_dependency(upstream: FaultyUpstream, fault: Any) -> None:
    upstream.script("/v1/chat/completions", [fault])
    with pytest.raises(StepFailed) as info:
        openai(upstream).complete(REQUEST)
    assert info.value.category == "dependency"
    assert info.value.reason.startswith("model 'careful':")


def test_a_rejected_api_key_is_an_auth_failure_naming_the_secret(upstream: FaultyUpstream) -> None:
    upstream.script("/v1/chat/completions", [status(401)])
    with pytest.raises(StepFailed, match="secret 'openai_key'") as info:
        openai(upstream).complete(REQUEST)
    assert info.value.category == "auth" and SECRETS["openai_key"] not in info.value.reason
    assert len(upstream.requests) == 1


def test_an_unpriced_model_reports_it(upstream: FaultyUpstream) -> None:
    cfg = config(upstream, price_in_per_mtok=None, price_out_per_mtok=None)
    usage = openai(upstream).read({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 5}},
                                  REQUEST).usage
    assert usage.input_tokens == 5 and not cfg.priced and cfg.cost(usage) is None
    with pytest.raises(ValueError, match="both prices"):
        config(upstream, price_out_per_mtok=None)


def test_anthropic_messages_with_headers_system_prompt_and_cost(upstream: FaultyUpstream) -> None:
    upstream.script("/v1/messages", [burst_503(1), anthropic_message("bonjour", input_tokens=1000,
                                                                      output_tokens=100)])
    cfg = config(upstream, provider="anthropic", base_url=upstream.url, api_key_secret="anthropic_key",
                 price_in_per_mtok=Decimal("3"), price_out_per_mtok=Decimal("15"))
    provider = build_provider(cfg, client(upstream), SECRETS.__getitem__, sleep=lambda _: None)
    assert isinstance(provider, AnthropicProvider)
    response = provider.complete(REQUEST)
    assert response.text == "bonjour" and response.cost_usd == Decimal("0.0045")
    sent = upstream.requests[-1]
    assert sent.headers["x-api-key"] == "ak-test-0123456789"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.json()
    assert body["system"] == "Be brief." and body["messages"] == [{"role": "user", "content": "Say hi"}]
