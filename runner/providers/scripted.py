"""Scripted model answers in both wire formats: the language of the sandbox model and the fake upstream.

A :class:`Turn` says what the model does in one turn: call tools (several at once, with valid,
schema-breaking or unparseable arguments), answer with text or a structured ``final`` value,
refuse, or stop early (``finish_reason: length`` / ``content_filter``). :func:`answer` turns it
into a real response body, an OpenAI chat completion or an Anthropic message, given the request
body it answers; the providers' readers then parse that body, so the sandbox model, the fake
upstream and the real APIs all go through the same normalisation.

:func:`policy_turn` is a deterministic model: "call each offered tool once (with arguments made
up from its schema), then answer" (an example of the output schema when one is asked for).

:func:`check_request` plays the APIs' request validation (the 400s a real server answers), e.g.
an assistant tool call left without a tool result, so an engine bug shows offline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.providers.anthropic import OUTPUT_TOOL
from runner.providers.base import ToolNames

__all__ = [
    "ScriptedCall",
    "ScriptedUsage",
    "Turn",
    "WireFormat",
    "answer",
    "check_request",
    "example_for_schema",
    "json_type",
    "offered_tools",
    "policy_turn",
    "turn_index",
]

WireFormat = Literal["openai", "anthropic"]
_WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXAMPLE_DEPTH = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptedCall(_Strict):
    """One tool call of a scripted turn.

    ``arguments`` is sent as JSON (any value: a non-object tests the model sending the wrong
    shape); ``raw_arguments`` is sent verbatim instead (broken JSON). In the Anthropic format,
    whose API always sends an object, ``raw_arguments`` goes out as a string input.
    """

    name: str = Field(min_length=1, max_length=200)
    arguments: Any = Field(default_factory=dict)
    raw_arguments: str | None = Field(default=None, max_length=100_000)
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")


class ScriptedUsage(_Strict):
    """Token usage a turn reports (``input_tokens`` includes ``cached_input_tokens``)."""

    input_tokens: int = Field(ge=0, le=10_000_000)
    output_tokens: int = Field(ge=0, le=10_000_000)
    cached_input_tokens: int = Field(default=0, ge=0, le=10_000_000)


class Turn(_Strict):
    """What the model does in one turn (set at least one field).

    ``final`` is the structured answer (any JSON value; it goes through the output tool in the
    Anthropic format when the request asks for structured output). ``finish_reason`` overrides how
    the turn ends: ``length`` (cut off), ``content_filter`` (OpenAI format; the Anthropic format
    has no such stop reason and sends ``refusal``), ``stop``, ``tool_calls`` or ``other``.
    """

    tool_calls: list[ScriptedCall] = Field(default_factory=list, max_length=64)
    text: str | None = Field(default=None, max_length=1_000_000)
    final: Any = None
    refusal: str | None = Field(default=None, max_length=10_000)
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "other"] | None = None
    usage: ScriptedUsage | None = None

    @model_validator(mode="after")
    def _something(self) -> Turn:
        if not (self.tool_calls or self.text is not None or self.has_final or self.refusal is not None
                or self.finish_reason is not None):
            raise ValueError("a turn needs tool_calls, text, final, refusal or finish_reason")
        return self

    @property
    def has_final(self) -> bool:
        """Whether the turn gives a structured ``final`` answer (``final: null`` counts)."""
        return "final" in self.model_fields_set


# -- reading a request body -------------------------------------------------------------------------


def turn_index(body: Mapping[str, Any]) -> int:
    """How many model turns the conversation in ``body`` already holds (the next turn's 0-based index)."""
    return sum(1 for m in body.get("messages") or [] if isinstance(m, Mapping) and m.get("role") == "assistant")


def offered_tools(body: Mapping[str, Any], fmt: WireFormat) -> dict[str, dict[str, Any]]:
    """The request's tools by wire name → parameters schema (the structured-output tool excluded)."""
    out: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or []:
        if not isinstance(tool, Mapping):
            continue
        if fmt == "openai":
            function = tool.get("function") or {}
            out[str(function.get("name", ""))] = dict(function.get("parameters") or {})
        elif tool.get("name") != OUTPUT_TOOL:
            out[str(tool.get("name", ""))] = dict(tool.get("input_schema") or {})
    return out


def _output_schema(body: Mapping[str, Any], fmt: WireFormat) -> dict[str, Any] | None:
    if fmt == "openai":
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            return dict((response_format.get("json_schema") or {}).get("schema") or {})
        return None
    for tool in body.get("tools") or []:
        if isinstance(tool, Mapping) and tool.get("name") == OUTPUT_TOOL:
            return dict(tool.get("input_schema") or {})
    return None


def _called(body: Mapping[str, Any], fmt: WireFormat) -> list[str]:
    names: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        if fmt == "openai":
            names += [str((c.get("function") or {}).get("name")) for c in message.get("tool_calls") or []]
        elif isinstance(message.get("content"), list):
            names += [str(b.get("name")) for b in message["content"] if b.get("type") == "tool_use"]
    return names


def _tool_choice(body: Mapping[str, Any], fmt: WireFormat) -> tuple[str, str | None]:
    """(mode, forced tool) with mode one of auto, none, required, forced."""
    choice = body.get("tool_choice")
    if choice is None:
        return "auto", None
    if fmt == "openai":
        if isinstance(choice, str):
            return choice, None
        return "forced", str((choice.get("function") or {}).get("name"))
    kind = choice.get("type")
    if kind == "tool":
        return "forced", str(choice.get("name"))
    return {"any": "required"}.get(str(kind), str(kind)), None


# -- a deterministic model ---------------------------------------------------------------------------


def json_type(schema: Mapping[str, Any]) -> str:
    """The JSON type a schema asks for: the first non-null one of a list; without ``type``, an object when
    it has ``properties``, else a string."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return str(kind)


def example_for_schema(schema: Any, _depth: int = 0) -> Any:  # noqa: PLR0911 - one case per JSON type
    """A small value that satisfies common JSON Schemas (required properties, types, enums, bounds)."""
    if not isinstance(schema, Mapping) or _depth > _EXAMPLE_DEPTH:
        return None if _depth > _EXAMPLE_DEPTH else "example"
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    for key in ("enum", "examples"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema[key][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_for_schema(schema[key][0], _depth + 1)
    kind = json_type(schema)
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example_for_schema(properties.get(name, {}), _depth + 1)
                for name in schema.get("required") or [] if isinstance(name, str)}
    if kind == "array":
        count = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
        return [example_for_schema(schema.get("items", {}), _depth + 1) for _ in range(min(count, 10))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else low
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    formats = {"email": "user@example.com", "date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01",
               "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000"}
    text = formats.get(str(schema.get("format")), "example")
    min_length = schema.get("minLength", 0) if isinstance(schema.get("minLength"), int) else 0
    max_length = schema.get("maxLength") if isinstance(schema.get("maxLength"), int) else None
    text = text.ljust(min(min_length, 10_000), "x")
    return text[:max_length] if max_length is not None else text


def policy_turn(body: Mapping[str, Any], fmt: WireFormat, *, final: Any = None, has_final: bool = False,
                parallel: bool = True) -> Turn:
    """Call each offered tool once (all in one turn when ``parallel``), then answer.

    Respects ``tool_choice``: ``none`` answers at once, a forced tool is called. The answer is
    ``final`` when given, else an example of the output schema, else a short text naming the calls.
    """
    mode, forced = _tool_choice(body, fmt)
    tools = offered_tools(body, fmt)
    called = _called(body, fmt)
    if mode == "forced" and forced is not None and forced != OUTPUT_TOOL:
        return Turn(tool_calls=[ScriptedCall(name=forced, arguments=example_for_schema(tools.get(forced, {})))])
    remaining = [] if mode in {"none", "forced"} else [n for n in tools if n not in called]
    if remaining:
        chosen = remaining if parallel else remaining[:1]
        return Turn(tool_calls=[ScriptedCall(name=n, arguments=example_for_schema(tools[n])) for n in chosen])
    if has_final:
        return Turn(final=final)
    schema = _output_schema(body, fmt)
    if schema is not None:
        return Turn(final=example_for_schema(schema))
    return Turn(text="done" + (f": called {', '.join(dict.fromkeys(called))}" if called else ""))


# -- building an answer ------------------------------------------------------------------------------


def _usage(turn: Turn, body: Mapping[str, Any], output: str) -> ScriptedUsage:
    if turn.usage is not None:
        return turn.usage
    prompt = json.dumps([body.get("system"), body.get("messages"), body.get("tools")], default=str)
    return ScriptedUsage(input_tokens=max(1, len(prompt) // 4), output_tokens=max(1, len(output) // 4))


def _arguments_text(call: ScriptedCall) -> str:
    if call.raw_arguments is not None:
        return call.raw_arguments
    return json.dumps(call.arguments)


def _final_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _openai(turn: Turn, body: Mapping[str, Any], index: int, wire: Callable[[str], str]) -> dict[str, Any]:
    calls = [{"id": c.id or f"call_{index}_{i}", "type": "function",
              "function": {"name": wire(c.name), "arguments": _arguments_text(c)}}
             for i, c in enumerate(turn.tool_calls)]
    content = turn.text
    if turn.has_final:
        content = (content or "") + _final_text(turn.final)
    finish = turn.finish_reason or ("tool_calls" if calls else "stop")
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": turn.refusal}
    if calls:
        message["tool_calls"] = calls
    usage = _usage(turn, body, (content or "") + json.dumps(calls))
    usage_out: dict[str, Any] = {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                                 "total_tokens": usage.input_tokens + usage.output_tokens}
    if usage.cached_input_tokens:
        usage_out["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
    return {"id": f"chatcmpl-scripted-{index}", "object": "chat.completion", "created": int(time.time()),
            "model": str(body.get("model") or "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage_out}


def _looks_wrapped(schema: Mapping[str, Any] | None) -> bool:
    return (isinstance(schema, Mapping) and schema.get("type") == "object"
            and list((schema.get("properties") or {}).keys()) == ["answer"] and schema.get("required") == ["answer"])


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                   "content_filter": "refusal", "other": "pause_turn"}


def _anthropic(turn: Turn, body: Mapping[str, Any], index: int, wire: Callable[[str], str],
               wrap_final: bool | None) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    text = turn.text or ""
    if turn.refusal is not None:
        text = text or turn.refusal
    output_schema = _output_schema(body, "anthropic")
    stop = "end_turn"
    if turn.has_final and output_schema is not None:
        wrap = _looks_wrapped(output_schema) if wrap_final is None else wrap_final
        value = turn.final
        if wrap and not (wrap_final is None and isinstance(value, Mapping) and list(value) == ["answer"]):
            value = {"answer": value}
        if text:
            blocks.append({"type": "text", "text": text})
        blocks.append({"type": "tool_use", "id": f"toolu_{index}_final", "name": OUTPUT_TOOL, "input": value})
        stop = "tool_use"
    else:
        if turn.has_final:
            text += _final_text(turn.final)
        if text:
            blocks.append({"type": "text", "text": text})
    for i, call in enumerate(turn.tool_calls):
        blocks.append({"type": "tool_use", "id": call.id or f"toolu_{index}_{i}", "name": wire(call.name),
                       "input": call.raw_arguments if call.raw_arguments is not None else call.arguments})
        stop = "tool_use"
    if turn.refusal is not None:
        stop = "refusal"
    if turn.finish_reason is not None:
        stop = _ANTHROPIC_STOP[turn.finish_reason]
    usage = _usage(turn, body, json.dumps(blocks))
    return {"id": f"msg_scripted_{index}", "type": "message", "role": "assistant",
            "model": str(body.get("model") or "scripted"), "content": blocks, "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens - min(usage.cached_input_tokens, usage.input_tokens),
                      "output_tokens": usage.output_tokens,
                      "cache_read_input_tokens": usage.cached_input_tokens,
                      "cache_creation_input_tokens": 0}}


def answer(turn: Turn, body: Mapping[str, Any], fmt: WireFormat, *, names: ToolNames | None = None,
           wrap_final: bool | None = None) -> dict[str, Any]:
    """The response body of ``turn`` in ``fmt``, answering the request ``body``.

    Tool names in the turn may be Midwatch names (``crm.lookup``) or wire names; ``names`` maps them
    (default: the request's offered wire names pass through, others get the plain encoding).
    ``wrap_final`` says whether the structured-output tool wraps the answer as ``{"answer": ...}``
    (None: guess from its schema).
    """
    offered = set(offered_tools(body, fmt))

    def wire(name: str) -> str:
        if name in offered:
            return name
        return names.wire(name) if names is not None else ToolNames.encode(name)

    index = turn_index(body)
    if fmt == "openai":
        return _openai(turn, body, index, wire)
    return _anthropic(turn, body, index, wire, wrap_final)


# -- request validation (the API's 400s) ------------------------------------------------------------


def _check_tools_openai(body: Mapping[str, Any]) -> str | None:  # noqa: PLR0911 - one message per API rule
    tools = body.get("tools")
    names = []
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            return "'tools' must be a non-empty array"
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if not isinstance(function, Mapping) or tool.get("type") != "function":
                return f"tools[{i}] must be {{type: function, function: {{...}}}}"
            name = function.get("name")
            if not isinstance(name, str) or not _WIRE_NAME.match(name):
                return f"tools[{i}].function.name: {name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'"
            names.append(name)
    choice = body.get("tool_choice")
    if choice is not None or body.get("parallel_tool_calls") is not None:
        if not names:
            return "tool_choice and parallel_tool_calls are only allowed when 'tools' are specified"
        if isinstance(choice, Mapping) and (choice.get("function") or {}).get("name") not in names:
            return f"tool_choice names a function that is not in tools: {choice!r}"
        if isinstance(choice, str) and choice not in ("auto", "none", "required"):
            return f"tool_choice {choice!r} is not one of auto, none, required"
    return None


def _check_openai(body: Mapping[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(body.get("model"), str) or not isinstance(messages, list) or not messages:
        return "'model' and a non-empty 'messages' array are required"
    pending: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return (f"messages[{i}]: a 'tool' message must answer a preceding assistant tool call "
                        f"(tool_call_id {call_id!r})")
            pending.remove(call_id)
            continue
        if pending:
            return (f"messages[{i}]: an assistant message with 'tool_calls' must be followed by tool messages "
                    f"responding to each 'tool_call_id' (missing: {', '.join(pending)})")
        if role not in ("system", "developer", "user", "assistant"):
            return f"messages[{i}].role {role!r} is not valid"
        if role == "assistant":
            pending = [str(c.get("id")) for c in message.get("tool_calls") or []]
    if pending:
        return f"the last assistant message's tool calls have no tool messages (missing: {', '.join(pending)})"
    return _check_tools_openai(body)


def _check_anthropic_tools(body: Mapping[str, Any]) -> str | None:
    names = []
    for i, tool in enumerate(body.get("tools") or []):
        name = tool.get("name") if isinstance(tool, Mapping) else None
        if not isinstance(name, str) or not _WIRE_NAME.match(name):
            return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if not isinstance(tool.get("input_schema"), Mapping) or tool["input_schema"].get("type") != "object":
            return f"tools.{i}.input_schema.type: Input should be 'object'"
        names.append(name)
    choice = body.get("tool_choice")
    if choice is not None:
        if not names:
            return "tool_choice may only be specified while providing tools"
        if choice.get("type") == "tool" and choice.get("name") not in names:
            return f"tool_choice: tool {choice.get('name')!r} not found in tools"
    return None


def _check_anthropic(body: Mapping[str, Any]) -> str | None:  # noqa: PLR0911 - one message per API rule
    messages = body.get("messages")
    if not isinstance(body.get("max_tokens"), int) or not isinstance(messages, list) or not messages:
        return "'max_tokens' and a non-empty 'messages' array are required"
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    pending: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i == 0 and role != "user":
            return "messages: the first message must use the 'user' role"
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if not blocks:
            return f"messages.{i}: all messages must have non-empty content"
        if pending:
            answered = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            missing = [p for p in pending if p not in answered]
            if role != "user" or missing:
                return (f"messages.{i}: tool_use ids were found without tool_result blocks immediately after: "
                        f"{', '.join(missing or pending)}")
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in pending:
                return f"messages.{i}: unexpected tool_use_id {block.get('tool_use_id')!r} in tool_result blocks"
        pending = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"] if role == "assistant" else []
    return _check_anthropic_tools(body)


def check_request(body: Any, fmt: WireFormat) -> str | None:
    """Why the API would reject ``body`` with a 400, or None. Checks the conversation's structure
    (tool calls answered by results, roles, names, tool_choice), not every field."""
    if not isinstance(body, Mapping):
        return "the request body must be a JSON object"
    return _check_openai(body) if fmt == "openai" else _check_anthropic(body)
