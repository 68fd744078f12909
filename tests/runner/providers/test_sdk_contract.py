"""The contract checks themselves: they reject what the official SDK types reject (else they prove nothing)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from runner.providers.anthropic import messages_request
from runner.providers.base import ForceTool, Message, ModelRequest, ToolCallRequest, ToolSpec
from runner.providers.openai_compat import chat_request
from runner.providers.scripted import Turn, answer
from tests.runner.providers import sdk_contract

CALL = ToolCallRequest.parse("call_1", "crm.lookup", '{"order": 1}')
REQUEST = ModelRequest(
    model="m", max_tokens=100, tools=[ToolSpec("crm.lookup", "Look up.", {"type": "object"})],
    tool_choice=ForceTool("crm.lookup"), parallel_tool_calls=False, output_schema={"type": "array"},
    messages=[Message.system("s"), Message.user("u"), Message.assistant("a", [CALL]),
              Message.tool_result(CALL, {"ok": 1}, is_error=True), Message.user("more")])
OPENAI = chat_request(REQUEST, model="gpt")
ANTHROPIC = messages_request(REQUEST, model="claude")


def _broken(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def test_every_feature_of_both_requests_passes() -> None:
    sdk_contract.openai_request(OPENAI)
    sdk_contract.anthropic_request(ANTHROPIC)


@pytest.mark.parametrize(("path", "value"), [
    (["tool_call_ids"], ["x"]),  # a field the API does not have
    (["messages", 3, "role"], "function_result"),
    (["messages", 2, "tool_calls", 0, "function", "arguments"], {"order": 1}),  # must be a JSON string
    (["tool_choice"], {"type": "tool", "name": "crm__lookup"}),  # Anthropic's shape
    (["tools", 0, "input_schema"], {"type": "object"}),
    (["max_tokens"], "100"),
])
def test_an_openai_request_that_drifts_from_the_sdk_type_is_rejected(path: list[Any], value: Any) -> None:
    with pytest.raises(sdk_contract.ContractError):
        sdk_contract.openai_request(_broken(OPENAI, path, value))


@pytest.mark.parametrize(("path", "value"), [
    (["temperature"], 0.0),  # the current Messages API has no sampling parameters
    (["messages", 0, "role"], "tool"),
    (["messages", 2, "content", 0, "type"], "tool_response"),
    (["tool_choice"], {"type": "function", "function": {"name": "crm__lookup"}}),  # OpenAI's shape
    (["tools", 0, "parameters"], {"type": "object"}),
    (["max_tokens"], None),
])
def test_an_anthropic_request_that_drifts_from_the_sdk_type_is_rejected(path: list[Any], value: Any) -> None:
    with pytest.raises(sdk_contract.ContractError):
        sdk_contract.anthropic_request(_broken(ANTHROPIC, path, value))


def test_answers_are_built_by_the_sdk_models_and_drift_is_rejected() -> None:
    turn = Turn(text="t", tool_calls=[{"name": "crm.lookup", "arguments": {"order": 1}}])
    completion = sdk_contract.openai_response(answer(turn, OPENAI, "openai"))
    assert completion.choices[0].message.tool_calls is not None
    message = sdk_contract.anthropic_response(answer(turn, ANTHROPIC, "anthropic"))
    assert [b.type for b in message.content] == ["text", "tool_use"]
    with pytest.raises(sdk_contract.ContractError):
        sdk_contract.openai_response(_broken(answer(turn, OPENAI, "openai"), ["choices", 0, "finish_reason"], "done"))
    with pytest.raises(sdk_contract.ContractError):
        sdk_contract.anthropic_response(_broken(answer(turn, ANTHROPIC, "anthropic"), ["stop_reason"], "finished"))
