"""The built-in sandbox model: scripted native tool calls, deterministic, offline, in either wire format.

Whatever the script, the sandbox builds a real request body and a real answer body and parses the
answer with the remote providers' own reader; both bodies are checked against the official SDKs'
types here, and both formats must give the same normalised response.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from runner.errors import StepFailed
from runner.providers.base import Message, ModelRequest, ModelResponse, ToolSpec
from runner.providers.factory import build_provider
from runner.providers.finish import finish_failure
from runner.providers.remote import ModelConfig
from runner.providers.sandbox import SandboxModel
from runner.tools.egress import EgressClient, EgressPolicy
from tests.runner.providers import sdk_contract

FORMATS = ["openai", "anthropic"]
TOOLS = [ToolSpec("crm.lookup", "Look an order up.",
                  {"type": "object", "required": ["order"], "properties": {"order": {"type": "integer"}}}),
         ToolSpec("sandbox.record", "Record a note.", {"type": "object"})]
SCHEMA = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def _ask(model: SandboxModel, options: dict[str, Any], messages: list[Message] | None = None,
         **fields: Any) -> ModelResponse:
    request = ModelRequest(model="sandbox", messages=messages or [Message.user("Handle order 42")], tools=TOOLS,
                           options=options, **fields)
    response = model.complete(request)
    exchange = model.last_exchange
    assert exchange is not None
    fmt, body, data = exchange
    if fmt == "openai":
        sdk_contract.openai_request(body)
        sdk_contract.openai_response(data)
    else:
        sdk_contract.anthropic_request(body)
        sdk_contract.anthropic_response(data)
    return response


def _normalised(response: ModelResponse) -> tuple[Any, ...]:
    """Everything but call ids, which each format spells its own way."""
    return (response.text, [(c.name, c.arguments, c.raw_arguments) for c in response.tool_calls],
            response.finish_reason, response.refusal, response.usage)


SCRIPT = {"turns": [
    {"tool_calls": [{"name": "crm.lookup", "arguments": {"order": 42}},
                    {"name": "sandbox.record", "arguments": {"note": "looked up"}}]},
    {"final": {"status": "done"}},
]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_script_plays_parallel_calls_then_a_final_answer_one_turn_per_model_turn(fmt: str) -> None:
    model = SandboxModel()
    options = {**SCRIPT, "format": fmt}
    first = _ask(model, options, output_schema=SCHEMA)
    assert first.finish_reason == "tool_calls" and first.provider == "sandbox" and first.model == "sandbox"
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("crm.lookup", {"order": 42}),
                                                                 ("sandbox.record", {"note": "looked up"})]
    history = [Message.user("Handle order 42"), first.assistant_message(),
               *(Message.tool_result(c, {"ok": True}) for c in first.tool_calls)]
    second = _ask(model, options, history, output_schema=SCHEMA)
    assert second.finish_reason == "stop" and json.loads(second.text) == {"status": "done"}
    assert not second.tool_calls
    again = _ask(model, options, history, output_schema=SCHEMA)  # same history, same answer: resumable
    assert _normalised(again) == _normalised(second)


@pytest.mark.parametrize("turn", [
    {"tool_calls": [{"name": "crm.lookup", "arguments": {"order": 1}}, {"name": "crm.lookup", "arguments": {}}]},
    {"tool_calls": [{"name": "crm.lookup", "arguments": {"order": "not a number"}}]},
    {"text": "The order is in the wareh", "finish_reason": "length"},
    {"refusal": "I won't do that."},
    {"final": {"status": "done"}},
    {"final": {"unexpected": True}},
    {"text": "plain", "usage": {"input_tokens": 500, "output_tokens": 20, "cached_input_tokens": 400}},
], ids=["parallel", "schema-breaking", "length", "refusal", "final", "rule-breaking-final", "usage"])
def test_both_wire_formats_give_the_same_normalised_response(turn: dict[str, Any]) -> None:
    answers = [_ask(SandboxModel(), {"turns": [turn], "format": fmt}, output_schema=SCHEMA) for fmt in FORMATS]
    assert _normalised(answers[0]) == _normalised(answers[1])


def test_broken_argument_json_keeps_the_raw_text_for_the_loop_to_feed_back() -> None:
    response = _ask(SandboxModel(), {"turns": [{"tool_calls": [{"name": "crm.lookup",
                                                                "raw_arguments": '{"order": 42'}]}]})
    call = response.tool_calls[0]
    assert not call.valid and call.arguments == {} and call.raw_arguments == '{"order": 42'
    assert "not valid JSON" in str(call.arguments_error)
    replayed = Message.assistant("", [call])
    assert replayed.tool_calls[0].arguments_json() == '{"order": 42'


@pytest.mark.parametrize("fmt", FORMATS)
def test_length_refusal_and_content_filter_map_to_failures(fmt: str) -> None:
    model = SandboxModel()
    cut = _ask(model, {"format": fmt, "turns": [{"text": "cut", "finish_reason": "length"}]})
    refused = _ask(model, {"format": fmt, "turns": [{"refusal": "No."}]})
    filtered = _ask(model, {"format": fmt, "turns": [{"finish_reason": "content_filter"}]})
    codes = [f.details["reason_code"] if (f := finish_failure(r, "sandbox")) else None
             for r in (cut, refused, filtered)]
    assert codes == ["model_output_truncated", "model_refused",
                     "model_content_filtered" if fmt == "openai" else "model_refused"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_policy_calls_each_offered_tool_once_then_answers_an_example_of_the_schema(fmt: str) -> None:
    model = SandboxModel()
    options = {"policy": "call_each_tool_once", "parallel": False, "format": fmt}
    messages = [Message.user("go")]
    called = []
    for _ in range(5):
        response = _ask(model, options, messages, output_schema=SCHEMA)
        if not response.tool_calls:
            break
        called += [c.name for c in response.tool_calls]
        messages += [response.assistant_message(), *(Message.tool_result(c, {}) for c in response.tool_calls)]
    assert called == ["crm.lookup", "sandbox.record"]
    assert json.loads(response.text) == {"status": "example"}


def test_the_last_turn_repeats_so_a_loop_bound_can_be_tested() -> None:
    model = SandboxModel()
    options = {"turns": [{"tool_calls": [{"name": "crm.lookup", "arguments": {"order": 1}}]}]}
    messages = [Message.user("go")]
    for _ in range(3):
        response = _ask(model, options, messages)
        assert response.finish_reason == "tool_calls"
        messages += [response.assistant_message(), Message.tool_result(response.tool_calls[0], {})]


def test_the_plain_answer_options_still_serve_llm_steps() -> None:
    model = SandboxModel()
    request = ModelRequest(model="sandbox", messages=[Message("user", "Thank ann")])
    assert model.complete(request).text == "[sandbox] Thank ann"
    answers = {"answers": ["first", {"n": 2}]}
    assert model.complete(replace(request, options=answers)).text == "first"
    assert model.complete(replace(request, options=answers, attempt=2)).text == '{"n": 2}'
    assert model.complete(replace(request, options=answers, attempt=9)).text == '{"n": 2}'
    structured = replace(request, options={"answer": {"status": "ok"}, "format": "anthropic"}, output_schema=SCHEMA)
    assert json.loads(model.complete(structured).text) == {"status": "ok"}  # through the output tool
    with pytest.raises(StepFailed, match="fail_times") as info:
        model.complete(replace(request, options={"fail_times": 1}))
    assert info.value.category == "dependency"


@pytest.mark.parametrize(("options", "where"), [
    ({"turns": [{"tool_call": []}]}, "turns.0.tool_call"),
    ({"turns": [{}]}, "turns.0"),
    ({"turns": [], "answer": "x"}, "turns"),
    ({"turns": [{"text": "a"}], "answer": "x"}, "(options)"),
    ({"policy": "call_everything"}, "policy"),
    ({"format": "gemini"}, "format"),
])
def test_a_malformed_script_is_a_clear_validation_failure(options: dict[str, Any], where: str) -> None:
    with pytest.raises(StepFailed) as info:
        SandboxModel().complete(ModelRequest(model="sandbox", messages=[Message.user("x")], options=options))
    assert info.value.category == "validation" and info.value.reason.startswith(f"sandbox options: {where}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tool_call_left_without_its_result_is_rejected_like_the_real_api_would(fmt: str) -> None:
    model = SandboxModel()
    first = _ask(model, {**SCRIPT, "format": fmt})
    with pytest.raises(StepFailed) as info:
        model.complete(ModelRequest(model="sandbox", tools=TOOLS, options={**SCRIPT, "format": fmt},
                                    messages=[Message.user("x"), first.assistant_message(), Message.user("next")]))
    assert info.value.category == "dependency" and info.value.details == {"status": 400, "retryable": False}
    assert "tool" in info.value.reason


def test_a_priced_sandbox_alias_costs_what_its_usage_says() -> None:
    config = ModelConfig(alias="rehearsal", provider="sandbox", price_in_per_mtok=Decimal(3),
                         price_out_per_mtok=Decimal(15))
    provider = build_provider(config, EgressClient(EgressPolicy(allowed_hosts=[])), lambda _: "")
    response = provider.complete(ModelRequest(model="rehearsal", messages=[Message.user("x")], options={
        "turns": [{"text": "ok", "usage": {"input_tokens": 1000, "output_tokens": 100}}]}))
    assert response.cost_usd == Decimal("0.0045")


def test_a_malformed_script_is_refused_when_the_spec_is_stored_not_mid_run() -> None:
    from runner.spec import parse_spec

    spec = """\
apiVersion: midwatch/v1
name: scripted
scope: {tools: [sandbox.echo]}
steps:
  - id: ask
    llm: {model: sandbox, prompt: hi, sandbox: {turns: [{tool_call: []}]}}
  - id: loop
    agent: {model: sandbox, prompt: hi, tools: [sandbox.echo],
            sandbox: {format: anthropic, turns: [{tool_calls: [{name: sandbox.echo}]}, {final: {ok: true}}]}}
"""
    result = parse_spec(spec)
    assert [(i.path, i.code) for i in result.errors] == [("steps[0].llm.sandbox", "sandbox_script")]
    assert "sandbox.turns.0.tool_call" in result.errors[0].message
