"""Anthropic Messages API (``POST {base_url}/v1/messages``) over the egress client.

System messages go to the top-level ``system`` field. No ``temperature`` is sent: the current
Messages API (and its official SDK's request type, which the contract tests hold us to) has no
sampling parameters. Tools go out with ``input_schema``; the
model's ``tool_use`` blocks come back as tool calls, and results return as ``tool_result`` blocks
(``tool_use_id``, ``is_error``) at the start of the next user turn (consecutive ``tool``/``user``
messages merge into one turn, as the API requires). A structured final answer is asked for with a
forced output tool, :data:`OUTPUT_TOOL`, whose input is the answer (a non-object schema is wrapped
as ``{"answer": ...}``): ``tool_choice: {type: tool, name: final_answer}`` when nothing else may be
called, ``{type: any}`` when the model may still call the other tools. ``stop_reason`` and
``usage`` (``cache_read_input_tokens`` counted as cached input) are read into the normalised
:class:`~runner.providers.base.ModelResponse`.

:func:`messages_request` and :func:`read_message` are pure, shared with the sandbox model and
the fault-injecting upstream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from runner.providers.base import (
    MAX_CALL_ID,
    MAX_TOOL_CALLS,
    FinishReason,
    ForceTool,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCallRequest,
    ToolNames,
    Usage,
)
from runner.providers.remote import ModelConfig, RemoteProvider

__all__ = ["DEFAULT_BASE_URL", "OUTPUT_TOOL", "RESPONSE_SCHEMA", "AnthropicProvider", "ModelConfig",
           "messages_request", "output_tool_schema", "read_message"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
OUTPUT_TOOL = "final_answer"
_OUTPUT_DESCRIPTION = ("Give your final answer by calling this tool; its input is the answer. "
                       "Call it only when you are done.")
_FINISH: dict[str, FinishReason] = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                                    "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                                    "refusal": "refusal"}
_TOKENS: dict[str, Any] = {"type": ["integer", "null"], "minimum": 0}

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["content"],
    "properties": {
        "model": {"type": "string"},
        "stop_reason": {"type": ["string", "null"]},
        "content": {"type": "array", "maxItems": MAX_TOOL_CALLS + 16, "items": {
            "type": "object", "required": ["type"],
            "properties": {"type": {"type": "string"}},
            "if": {"properties": {"type": {"const": "tool_use"}}},
            "then": {"required": ["id", "name", "input"],
                     "properties": {"id": {"type": "string", "maxLength": MAX_CALL_ID},
                                    "name": {"type": "string"}}}}},
        "usage": {"type": ["object", "null"], "properties": {
            "input_tokens": _TOKENS, "output_tokens": _TOKENS,
            "cache_read_input_tokens": _TOKENS, "cache_creation_input_tokens": _TOKENS}},
    },
}


def _wrapped(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") != "object"


def output_tool_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The output tool's ``input_schema``: ``schema`` itself, or ``{"answer": schema}`` when not an object."""
    if _wrapped(schema):
        return {"type": "object", "properties": {"answer": dict(schema)}, "required": ["answer"]}
    return dict(schema)


def _turns(messages: list[Message], names: ToolNames) -> list[dict[str, Any]]:
    """Non-system messages as alternating user/assistant turns of content blocks."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if message.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                                     "content": message.content}
            if message.is_error:
                block["is_error"] = True
            blocks.append(block)
        else:
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            blocks.extend({"type": "tool_use", "id": call.id, "name": names.wire(call.name),
                           "input": dict(call.arguments)} for call in message.tool_calls)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    out = []
    for role, blocks in turns:
        # tool results must open the user turn that answers the tool calls
        blocks.sort(key=lambda b: b["type"] != "tool_result")
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            out.append({"role": role, "content": blocks[0]["text"]})
        else:
            out.append({"role": role, "content": blocks or ""})
    return out


def _tool_choice(request: ModelRequest, names: ToolNames) -> dict[str, Any] | None:
    choice = request.tool_choice
    if isinstance(choice, ForceTool):
        return {"type": "tool", "name": names.wire(choice.name)}
    if request.output_schema is not None:
        if choice == "none" or not request.tools:
            return {"type": "tool", "name": OUTPUT_TOOL}
        return {"type": "any"}  # a tool or the answer: never free text
    if request.tools:
        return {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}
    return None


def messages_request(request: ModelRequest, *, model: str) -> dict[str, Any]:
    """The ``/v1/messages`` body for ``request`` (pure)."""
    names = ToolNames((t.name for t in request.tools), reserved=[OUTPUT_TOOL] if request.output_schema else [])
    system = [m.content for m in request.messages if m.role == "system"]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": _turns([m for m in request.messages if m.role != "system"], names),
    }
    if system:
        body["system"] = "\n\n".join(system)
    tools: list[dict[str, Any]] = []
    for tool in request.tools:
        entry: dict[str, Any] = {"name": names.wire(tool.name), "input_schema": dict(tool.parameters)}
        if tool.description:
            entry["description"] = tool.description
        tools.append(entry)
    if request.output_schema is not None:
        tools.append({"name": OUTPUT_TOOL, "description": _OUTPUT_DESCRIPTION,
                      "input_schema": output_tool_schema(request.output_schema)})
    tool_choice = _tool_choice(request, names)
    if tools:
        body["tools"] = tools
    if tool_choice is not None:
        if request.parallel_tool_calls is not None and tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = not request.parallel_tool_calls
        body["tool_choice"] = tool_choice
    return body


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def read_message(data: Mapping[str, Any], request: ModelRequest, *, provider: str = "anthropic",
                 default_model: str = "") -> ModelResponse:
    """The normalised answer in a Messages API response (pure; cost and latency left at zero)."""
    names = ToolNames((t.name for t in request.tools), reserved=[OUTPUT_TOOL] if request.output_schema else [])
    texts: list[str] = []
    calls: list[ToolCallRequest] = []
    answer: Any = None
    answered = False
    for block in data.get("content") or []:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            name = str(block.get("name", ""))
            if request.output_schema is not None and name == OUTPUT_TOOL and not answered:
                value = block.get("input")
                answer = value.get("answer") if _wrapped(request.output_schema) and isinstance(value, Mapping) \
                    else value
                answered = True
            else:
                calls.append(ToolCallRequest.parse(str(block.get("id", f"toolu_{len(calls)}")), names.real(name),
                                                   block.get("input")))
    raw_finish = data.get("stop_reason")
    finish: FinishReason = _FINISH.get(str(raw_finish), "other") if raw_finish is not None else "stop"
    text = "".join(texts)
    if answered:  # the final answer: other calls of the same turn are moot
        text, calls = json.dumps(answer), []
        if finish == "tool_calls":
            finish = "stop"
    elif calls and finish == "stop":
        finish = "tool_calls"
    refusal = None
    if finish == "refusal":  # as in OpenAI's format: the explanation is the refusal, not an answer
        refusal, text = text or "the model declined to answer", ""
    usage = data.get("usage") or {}
    cached = _int(usage.get("cache_read_input_tokens"))
    counted = Usage(_int(usage.get("input_tokens")) + cached + _int(usage.get("cache_creation_input_tokens")),
                    _int(usage.get("output_tokens")), cached)
    return ModelResponse.read(data, text=text, default_model=default_model, provider=provider, usage=counted,
                              calls=calls, finish=finish, raw_finish=raw_finish, refusal=refusal)


class AnthropicProvider(RemoteProvider):
    """A model served by the Anthropic Messages API."""

    name = "anthropic"
    response_schema: ClassVar[dict[str, Any]] = RESPONSE_SCHEMA

    default_base_url = DEFAULT_BASE_URL
    path = "/v1/messages"
    reader = staticmethod(read_message)

    def headers(self, api_key: str) -> dict[str, str]:
        """``x-api-key`` and ``anthropic-version``."""
        return {"x-api-key": api_key, "anthropic-version": self.config.anthropic_version,
                "Accept": "application/json"}

    def payload(self, request: ModelRequest) -> dict[str, Any]:
        """The Messages request body."""
        return messages_request(request, model=self.config.model or "")

