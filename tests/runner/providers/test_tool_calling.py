"""Native tool calling through both wire formats, against the fault-injecting upstream on loopback.

Each story runs for the OpenAI-compatible endpoint and for the Anthropic Messages endpoint; the
conftest checks every request Midwatch sent, and every answer the fake gave, against the official
SDKs' types when the test ends.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from runner.errors import StepFailed, ToolArgsInvalid
from runner.providers.base import ForceTool, Message, ModelRequest, ModelResponse, ToolSpec
from runner.providers.finish import finish_failure
from runner.providers.tool_args import validate_call
from runner.sandbox_upstream import (
    FaultyUpstream,
    burst_503,
    html_200,
    model_turn,
    rate_limit,
    reset,
    slow,
    status,
    tool_call,
    tool_policy,
    truncated_json,
)
from tests.runner.providers.conftest import provider_for

FORMATS = ["openai", "anthropic"]
PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
LOOKUP = ToolSpec("crm.lookup", "Look an order up by id.",
                  {"type": "object", "required": ["order"], "properties": {"order": {"type": "integer"}}})
NOTE = ToolSpec("crm.note", "Leave a note on an order.",
                {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}})
ANSWER = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["done", "failed"]}}}


class _Tool:
    """What validate_call needs of a tool: a name and an args_schema."""

    def __init__(self, spec: ToolSpec) -> None:
        self.name, self.args_schema = spec.name, dict(spec.parameters)


def _request(**overrides: Any) -> ModelRequest:
    fields: dict[str, Any] = {"model": "careful", "messages": [Message.system("You handle orders."),
                                                                Message.user("Check order 42 and note it.")],
                              "tools": [LOOKUP, NOTE], "max_tokens": 300}
    fields.update(overrides)
    return ModelRequest(**fields)


def _loop(provider: Any, request: ModelRequest, tools: dict[str, Any], turns: int = 6) -> list[ModelResponse]:
    """A minimal agent loop: call the model, run each requested tool (bad arguments go back as
    errors), append the results, until the model answers."""
    messages = list(request.messages)
    answers = []
    for _ in range(turns):
        response = provider.complete(replace(request, messages=list(messages)))
        answers.append(response)
        if not response.tool_calls:
            return answers
        messages.append(response.assistant_message())
        for call in response.tool_calls:
            try:
                arguments = validate_call(_Tool(next(t for t in request.tools if t.name == call.name)), call)
            except ToolArgsInvalid as exc:
                messages.append(Message.tool_result(call, {"error": exc.feedback}, is_error=True))
                continue
            messages.append(Message.tool_result(call, tools[call.name](arguments)))
    raise AssertionError("the model never answered")


TOOLS = {"crm.lookup": lambda a: {"order": a["order"], "state": "shipped"},
         "crm.note": lambda a: {"noted": a["text"]}}


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_parallel_calls_then_a_structured_answer_round_trip_with_their_call_ids(
        upstream: FaultyUpstream, fmt: str) -> None:
    upstream.script(PATH[fmt], [
        model_turn(text="Looking it up.", tool_calls=[tool_call("crm.lookup", {"order": 42}),
                                                       tool_call("crm.note", {"text": "checked"})],
                   input_tokens=900, output_tokens=40),
        model_turn(final={"status": "done"}, input_tokens=1000, output_tokens=10),
    ])
    answers = _loop(provider_for(upstream, fmt), _request(output_schema=ANSWER), TOOLS)

    first, last = answers
    assert first.finish_reason == "tool_calls" and first.text == "Looking it up."
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("crm.lookup", {"order": 42}),
                                                                 ("crm.note", {"text": "checked"})]
    assert len({c.id for c in first.tool_calls}) == 2
    assert last.finish_reason == "stop" and json.loads(last.text) == {"status": "done"} and not last.tool_calls
    assert last.cost_usd == Decimal("0.0026")  # 1000 * 2.50/1M + 10 * 10/1M

    sent = [r.json() for r in upstream.requests_to(PATH[fmt])]
    assert len(sent) == 2
    ids = [c.id for c in first.tool_calls]
    if fmt == "openai":
        tools = sent[0]["tools"]
        assert [t["function"]["name"] for t in tools] == ["crm__lookup", "crm__note"]
        assert tools[0]["function"]["parameters"] == dict(LOOKUP.parameters)
        assert tools[0]["function"]["description"] == LOOKUP.description
        assert sent[0]["tool_choice"] == "auto"
        assert sent[0]["response_format"]["json_schema"]["schema"] == ANSWER
        results = [m for m in sent[1]["messages"] if m["role"] == "tool"]
        assert [(m["tool_call_id"], json.loads(m["content"])) for m in results] == [
            (ids[0], {"order": 42, "state": "shipped"}), (ids[1], {"noted": "checked"})]
        assistant = sent[1]["messages"][2]
        assert assistant["content"] == "Looking it up." and [c["id"] for c in assistant["tool_calls"]] == ids
    else:
        tools = sent[0]["tools"]
        assert [t["name"] for t in tools] == ["crm__lookup", "crm__note", "final_answer"]
        assert tools[0]["input_schema"] == dict(LOOKUP.parameters) and tools[2]["input_schema"] == ANSWER
        assert sent[0]["tool_choice"] == {"type": "any"}  # a tool or the answer, never free text
        assert sent[0]["system"] == "You handle orders."
        turn = sent[1]["messages"][-1]
        assert turn["role"] == "user"
        assert [(b["type"], b["tool_use_id"], json.loads(b["content"])) for b in turn["content"]] == [
            ("tool_result", ids[0], {"order": 42, "state": "shipped"}), ("tool_result", ids[1], {"noted": "checked"})]


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_arguments_are_fed_back_as_a_tool_error_and_the_model_corrects_itself(
        upstream: FaultyUpstream, fmt: str) -> None:
    bad = (tool_call("crm.lookup", raw_arguments='{"order": 4') if fmt == "openai"  # broken JSON
           else tool_call("crm.lookup", {"order": "forty-two"}))  # Anthropic always sends an object
    upstream.script(PATH[fmt], [model_turn(tool_calls=[bad]),
                                model_turn(tool_calls=[tool_call("crm.lookup", {"order": 42})]),
                                model_turn(text="Order 42 has shipped.")])
    calls: list[dict[str, Any]] = []
    answers = _loop(provider_for(upstream, fmt), _request(), {**TOOLS, "crm.lookup": lambda a: calls.append(a) or {}})

    assert calls == [{"order": 42}], "the bad arguments reached the tool"
    first = answers[0].tool_calls[0]
    if fmt == "openai":
        assert not first.valid and first.raw_arguments == '{"order": 4'
        assert "not valid JSON" in str(first.arguments_error)
    else:
        assert first.valid and first.arguments == {"order": "forty-two"}
    assert answers[-1].text == "Order 42 has shipped."
    second = upstream.requests_to(PATH[fmt])[1].json()["messages"]
    if fmt == "openai":
        error = next(m for m in second if m["role"] == "tool")
        assert second[2]["tool_calls"][0]["function"]["arguments"] == '{"order": 4'  # replayed as sent
    else:
        error = second[-1]["content"][0]
        assert error["is_error"] is True
    assert "Invalid arguments for tool crm.lookup" in json.loads(error["content"])["error"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("choice", ["none", "required", ForceTool("crm.note")], ids=["none", "required", "forced"])
def test_tool_choice_and_parallel_calls_are_sent_in_each_dialect(upstream: FaultyUpstream, fmt: str,
                                                                 choice: Any) -> None:
    provider_for(upstream, fmt).complete(_request(tool_choice=choice, parallel_tool_calls=False))
    body = upstream.requests[0].json()
    if fmt == "openai":
        expected = {"none": "none", "required": "required"}.get(choice) if isinstance(choice, str) else \
            {"type": "function", "function": {"name": "crm__note"}}
        assert body["tool_choice"] == expected and body["parallel_tool_calls"] is False
    else:
        expected_type = {"none": "none", "required": "any"}.get(choice) if isinstance(choice, str) else "tool"
        assert body["tool_choice"]["type"] == expected_type
        if expected_type != "none":
            assert body["tool_choice"]["disable_parallel_tool_use"] is True
        if expected_type == "tool":
            assert body["tool_choice"]["name"] == "crm__note"


@pytest.mark.parametrize("fmt", FORMATS)
def test_length_refusal_and_filtering_come_back_as_distinct_failures_with_their_cost(
        upstream: FaultyUpstream, fmt: str) -> None:
    upstream.script(PATH[fmt], [
        model_turn(text="The order is in the warehou", finish_reason="length", input_tokens=100, output_tokens=300),
        model_turn(refusal="I can't help with that request."),
        model_turn(finish_reason="content_filter"),
    ])
    provider = provider_for(upstream, fmt)
    cut, refused, filtered = (provider.complete(_request()) for _ in range(3))

    assert cut.finish_reason == "length" and cut.raw_finish_reason == ("length" if fmt == "openai" else "max_tokens")
    assert cut.cost_usd == Decimal("0.00325"), "a truncated answer still costs its tokens"
    failure = finish_failure(cut, "careful", max_tokens=300)
    assert failure is not None and failure.category == "validation" and failure.action == "escalate"
    assert failure.details["reason_code"] == "model_output_truncated" and "max_tokens=300" in failure.reason

    assert refused.finish_reason == "refusal" and refused.refusal == "I can't help with that request."
    failure = finish_failure(refused, "careful")
    assert failure is not None and failure.details["reason_code"] == "model_refused"
    assert "I can't help" in failure.reason

    failure = finish_failure(filtered, "careful")
    assert failure is not None
    if fmt == "openai":
        assert filtered.finish_reason == "content_filter"
        assert failure.details["reason_code"] == "model_content_filtered"
    else:  # the Messages API has no content filter stop reason: its safety stop is a refusal
        assert filtered.finish_reason == "refusal"


@pytest.mark.parametrize("fmt", FORMATS)
def test_cached_input_tokens_are_read_and_priced_at_the_cached_price(upstream: FaultyUpstream, fmt: str) -> None:
    upstream.script(PATH[fmt], [model_turn(text="hi", input_tokens=10_000, cached_input_tokens=8_000,
                                           output_tokens=100)])
    provider = provider_for(upstream, fmt, price_cached_in_per_mtok=Decimal("0.25"))
    response = provider.complete(_request(tools=()))
    assert (response.usage.input_tokens, response.usage.cached_input_tokens, response.usage.output_tokens) == (
        10_000, 8_000, 100)
    # 2,000 uncached * 2.50 + 8,000 cached * 0.25 + 100 out * 10, per million
    assert response.cost_usd == Decimal("0.008")
    raw = upstream.responses_to(PATH[fmt])[0].json()["usage"]
    if fmt == "openai":
        assert raw["prompt_tokens"] == 10_000 and raw["prompt_tokens_details"] == {"cached_tokens": 8_000}
    else:  # Anthropic reports cache reads beside, not inside, input_tokens
        assert raw["input_tokens"] == 2_000 and raw["cache_read_input_tokens"] == 8_000


TRANSIENT = {"429": [rate_limit("0")], "503": [burst_503(2)], "html": [html_200()], "reset": [reset()],
             "truncated": [truncated_json()], "slow": [slow(5)]}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", list(TRANSIENT), ids=list(TRANSIENT))
def test_transport_faults_on_either_endpoint_are_retried_then_answered(upstream: FaultyUpstream, fmt: str,
                                                                       fault: str) -> None:
    upstream.script(PATH[fmt], [*TRANSIENT[fault], model_turn(tool_calls=[tool_call("crm.lookup", {"order": 7})])])
    provider = provider_for(upstream, fmt, timeout_s=0.5, retry={"max_attempts": 4, "base_delay_s": 0,
                                                                 "max_delay_s": 0})
    response = provider.complete(_request())
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("crm.lookup", {"order": 7})]
    assert provider.attempts[-1].decided == "ok" and len(provider.attempts) >= 2
    assert len(upstream.requests_to(PATH[fmt])) == len(provider.attempts)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_rejected_key_is_an_auth_failure_after_one_request(upstream: FaultyUpstream, fmt: str) -> None:
    upstream.script(PATH[fmt], [status(401)])
    with pytest.raises(StepFailed) as info:
        provider_for(upstream, fmt).complete(_request())
    assert info.value.category == "auth" and info.value.action == "escalate"
    assert len(upstream.requests_to(PATH[fmt])) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_conversation_the_api_would_reject_fails_once_without_retrying(fmt: str) -> None:
    with FaultyUpstream() as up:  # the default fixture would (rightly) flag the malformed request
        provider = provider_for(up, fmt)
        first = provider.complete(_request())  # the built-in policy calls both tools
        orphaned = _request(messages=[*_request().messages, first.assistant_message(), Message.user("go on")])
        with pytest.raises(StepFailed) as info:
            provider.complete(orphaned)
        assert info.value.category == "dependency" and info.value.details["status"] == 400
        assert len(up.requests) == 2, "a 400 must not be retried"
        assert "tool" in up.responses[-1].json()["error"]["message"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "one-by-one"])
def test_the_unscripted_upstream_calls_each_tool_once_then_answers_the_schema(upstream: FaultyUpstream, fmt: str,
                                                                              parallel: bool) -> None:
    if not parallel:
        upstream.script(PATH[fmt], [tool_policy(parallel=False)])
    answers = _loop(provider_for(upstream, fmt), _request(output_schema=ANSWER), TOOLS)
    assert [[c.name for c in a.tool_calls] for a in answers] == (
        [["crm.lookup", "crm.note"], []] if parallel else [["crm.lookup"], ["crm.note"], []])
    assert answers[0].tool_calls[0].arguments == {"order": 0}  # made up from the schema
    assert json.loads(answers[-1].text) == {"status": "done"}
    assert len(upstream.requests_to(PATH[fmt])) == len(answers)


def test_openai_reasoning_models_get_max_completion_tokens_and_no_temperature(upstream: FaultyUpstream) -> None:
    provider_for(upstream, "openai", max_tokens_param="max_completion_tokens",
                 send_temperature=False).complete(_request(tools=()))
    body = upstream.requests[0].json()
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body and "temperature" not in body


def test_a_plain_llm_answer_still_works_on_both_endpoints(upstream: FaultyUpstream) -> None:
    for fmt in FORMATS:
        response = provider_for(upstream, fmt).complete(
            ModelRequest(model="careful", messages=[Message("user", "Say hi")]))
        assert response.text == "[upstream] Say hi" and response.finish_reason == "stop"
        assert response.tool_calls == () and finish_failure(response, "careful") is None


@pytest.mark.parametrize("shape", ["too-many-calls", "endless-id"])
def test_an_answer_beyond_sane_bounds_is_a_malformed_answer_not_work_to_do(upstream: FaultyUpstream,
                                                                           shape: str) -> None:
    from runner.sandbox_upstream import ok

    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "crm__lookup", "arguments": "{}"}}
             for i in range(129 if shape == "too-many-calls" else 1)]
    if shape == "endless-id":
        calls[0]["id"] = "x" * 257
    upstream.script(PATH["openai"], [ok({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "finish_reason": "tool_calls",
                                                      "message": {"role": "assistant", "content": None,
                                                                  "tool_calls": calls}}]})])
    with pytest.raises(StepFailed) as info:
        provider_for(upstream, "openai").complete(_request())
    assert info.value.category == "dependency" and "schema" in info.value.reason
    assert len(upstream.requests) == 1, "a malformed answer is not retried"
