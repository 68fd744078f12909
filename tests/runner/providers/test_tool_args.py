"""Tool argument schemas: declared at upload (HTTP tools) or in code (built-ins), checked before any call."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from runner.errors import ToolArgsInvalid
from runner.providers.base import ToolCallRequest
from runner.providers.tool_args import tool_spec, validate_args, validate_call
from runner.tools.breaker import BreakerConfig, CircuitBreaker, InMemoryBreakerStore
from runner.tools.egress import EgressClient, EgressPolicy
from runner.tools.http import HttpTool
from runner.tools.http_definition import ToolDefinition
from runner.tools.sandbox import BUILTIN_TOOLS

REFUND_ARGS = {
    "type": "object", "required": ["order", "amount"], "additionalProperties": False,
    "properties": {"order": {"type": "integer", "minimum": 1},
                   "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 500},
                   "reason": {"type": "string", "maxLength": 200}},
}


def _definition(**fields: Any) -> ToolDefinition:
    return ToolDefinition.model_validate({"name": "payments.refund", "method": "POST",
                                          "url": "https://pay.example.com/refunds", "side_effect": True,
                                          "idempotent": True, **fields})


def _http_tool(definition: ToolDefinition) -> HttpTool:
    return HttpTool(definition, EgressClient(EgressPolicy(allowed_hosts=["pay.example.com"])), lambda _: "",
                    CircuitBreaker(BreakerConfig(), InMemoryBreakerStore()), "t|pay.example.com")


def test_an_http_tool_offers_its_description_and_args_schema_to_models() -> None:
    tool = _http_tool(_definition(description="Refund part of an order.", args_schema=REFUND_ARGS))
    spec = tool_spec(tool)
    assert (spec.name, spec.description, spec.parameters) == ("payments.refund", "Refund part of an order.",
                                                              REFUND_ARGS)
    assert tool_spec(_http_tool(_definition())).parameters == {"type": "object"}  # none declared: any object


@pytest.mark.parametrize(("args", "path", "message"), [
    ({"order": 7}, "$", "'amount' is a required property"),
    ({"order": 7, "amount": 9000}, "$.amount", "9000 is greater than the maximum of 500"),
    ({"order": "7", "amount": 5}, "$.order", "'7' is not of type 'integer'"),
    ({"order": 7, "amount": 5, "raise_limit": True}, "$", "additional properties are not allowed"),
    ([7, 5], "$", "arguments must be a JSON object, not list"),
])
def test_arguments_that_break_the_schema_are_rejected_before_any_call_naming_the_path(
        args: Any, path: str, message: str) -> None:
    tool = _http_tool(_definition(args_schema=REFUND_ARGS))
    with pytest.raises(ToolArgsInvalid) as info:
        validate_args(tool, args)
    error = info.value
    assert error.category == "validation" and error.code == "tool_args_invalid" and error.json_path == path
    assert message in error.reason and error.tool == "payments.refund"
    assert error.feedback.startswith("Invalid arguments for tool payments.refund: at " + path)
    validate_args(tool, {"order": 7, "amount": 12.5, "reason": "damaged"})


def test_a_models_unparseable_arguments_are_rejected_like_schema_breaking_ones() -> None:
    tool = _http_tool(_definition(args_schema=REFUND_ARGS))
    with pytest.raises(ToolArgsInvalid, match="not valid JSON"):
        validate_call(tool, ToolCallRequest.parse("c1", "payments.refund", '{"order": 7, "amount": '))
    assert validate_call(tool, ToolCallRequest.parse("c2", "payments.refund", '{"order": 7, "amount": 1}')) == {
        "order": 7, "amount": 1}


def test_built_in_tools_declare_their_arguments() -> None:
    sleep = BUILTIN_TOOLS["sandbox.sleep"]
    validate_args(sleep, {"seconds": 0.5})
    with pytest.raises(ToolArgsInvalid, match=r"\$\.seconds"):
        validate_args(sleep, {"seconds": 301})
    for name, tool in BUILTIN_TOOLS.items():
        spec = tool_spec(tool)
        assert spec.name == name and spec.description and spec.parameters["type"] == "object"
    validate_args(BUILTIN_TOOLS["sandbox.echo"], {"anything": [1, 2]})


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "array"}, "must describe an object"),
    ({"type": "object", "properties": {"a": {"type": "strng"}}}, "not a valid JSON schema"),
    ({"type": "object", "minProperties": -1}, "not a valid JSON schema"),
    ({"type": "object", "properties": {f"p{i}": {"description": "x" * 1000} for i in range(80)}}, "larger than"),
    ({"type": "object", "properties": {"id": {"type": "integer"}}}, None),
], ids=["not-an-object", "bad-type", "bad-keyword", "too-large", "fine"])
def test_an_args_schema_is_checked_at_upload(schema: dict[str, Any], message: str | None) -> None:
    if message is None:
        assert _definition(args_schema=schema).args_schema == schema
        return
    with pytest.raises(ValidationError, match=message):
        _definition(args_schema=schema)


def test_a_deeply_nested_args_schema_is_refused() -> None:
    schema: dict[str, Any] = {"type": "object"}
    node = schema
    for _ in range(40):
        node["properties"] = {"x": {"type": "object"}}
        node = node["properties"]["x"]
    with pytest.raises(ValidationError, match="nested deeper"):
        _definition(args_schema=schema)


def test_a_description_is_a_description_not_a_prompt() -> None:
    with pytest.raises(ValidationError, match="description"):
        _definition(description="x" * 5000)
