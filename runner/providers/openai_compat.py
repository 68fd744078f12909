"""OpenAI-compatible chat completions (``POST {base_url}/chat/completions``) over the egress client.

Works with any compatible server (OpenAI, vLLM, llama.cpp's server, Ollama's ``/v1``, the sandbox
upstream). Tools go out as ``tools: [{type: function, function: {name, description, parameters}}]``
with ``tool_choice``; the model's ``tool_calls`` (several per turn) come back parsed, and results are
sent as ``role: tool`` messages carrying the ``tool_call_id``. A structured final answer is asked
for with ``response_format: {type: json_schema, json_schema: {name, schema}}`` and arrives as JSON
text. ``finish_reason``, ``refusal`` and ``usage`` (with ``prompt_tokens_details.cached_tokens``)
are read into the normalised :class:`~runner.providers.base.ModelResponse`.

:func:`chat_request` and :func:`read_chat_completion` are pure (no I/O): the sandbox model and the
fault-injecting upstream use the same two functions, so all three speak one dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from runner.providers import base
from runner.providers.base import FinishReason, ModelRequest, ModelResponse, ToolCallRequest, ToolNames
from runner.providers.remote import ModelConfig, RemoteProvider

__all__ = ["OUTPUT_FORMAT_NAME", "RESPONSE_SCHEMA", "ModelConfig", "OpenAICompatProvider", "chat_request",
           "read_chat_completion"]

OUTPUT_FORMAT_NAME = "final_answer"  # response_format.json_schema.name
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                                    "function_call": "tool_calls", "content_filter": "content_filter"}
_TOKENS: dict[str, Any] = {"type": ["integer", "null"], "minimum": 0}

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["choices"],
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["message"],
            "properties": {
                "finish_reason": {"type": ["string", "null"]},
                "message": {"type": "object", "properties": {
                    "content": {"type": ["string", "null", "array"]},
                    "refusal": {"type": ["string", "null"]},
                    "tool_calls": {"type": ["array", "null"], "maxItems": base.MAX_TOOL_CALLS, "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": ["string", "null"], "maxLength": base.MAX_CALL_ID},
                            "function": {"type": "object", "required": ["name"], "properties": {
                                "name": {"type": "string"},
                                "arguments": {"type": ["string", "object", "null"]}}}}}}}}}}},
        "usage": {"type": ["object", "null"], "properties": {
            "prompt_tokens": _TOKENS,
            "completion_tokens": _TOKENS,
            "prompt_tokens_details": {"type": ["object", "null"], "properties": {"cached_tokens": _TOKENS}}}},
    },
}


def _message(message: base.Message, names: ToolNames) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant"}
        if message.content or not message.tool_calls:
            out["content"] = message.content
        if message.tool_calls:
            out["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": names.wire(call.name), "arguments": call.arguments_json()}}
                                 for call in message.tool_calls]
        return out
    role = message.role if message.role in ("system", "user") else "user"
    return {"role": role, "content": message.content}


def chat_request(request: ModelRequest, *, model: str, max_tokens_param: str = "max_tokens",
                 send_temperature: bool = True) -> dict[str, Any]:
    """The ``/chat/completions`` body for ``request`` (pure)."""
    names = ToolNames(t.name for t in request.tools)
    body: dict[str, Any] = {"model": model, "messages": [_message(m, names) for m in request.messages],
                            max_tokens_param: request.max_tokens}
    if send_temperature:
        body["temperature"] = request.temperature
    if request.tools:
        tools = []
        for tool in request.tools:
            function: dict[str, Any] = {"name": names.wire(tool.name), "parameters": dict(tool.parameters)}
            if tool.description:
                function["description"] = tool.description
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
        choice = request.tool_choice
        body["tool_choice"] = ({"type": "function", "function": {"name": names.wire(choice.name)}}
                               if isinstance(choice, base.ForceTool) else choice)
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.output_schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": OUTPUT_FORMAT_NAME, "schema": request.output_schema}}
    return body


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def read_chat_completion(data: Mapping[str, Any], request: ModelRequest, *, provider: str = "openai",
                         default_model: str = "") -> ModelResponse:
    """The normalised answer in a chat completion (pure; cost and latency left at zero)."""
    names = ToolNames(t.name for t in request.tools)
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = _text(message.get("content"))
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) and message.get("refusal") else None
    calls: list[ToolCallRequest] = []
    seen: set[str] = set()
    for i, raw in enumerate(message.get("tool_calls") or []):
        if not isinstance(raw, Mapping) or raw.get("type", "function") != "function":
            continue
        function = raw.get("function") or {}
        call_id = str(raw.get("id") or f"call_{i}")
        if call_id in seen:  # some servers repeat or omit ids: keep each call addressable
            call_id = f"{call_id}_{i}"
        seen.add(call_id)
        calls.append(ToolCallRequest.parse(call_id, names.real(str(function.get("name", ""))),
                                           function.get("arguments")))
    raw_finish = choice.get("finish_reason")
    finish: FinishReason = _FINISH.get(str(raw_finish), "other") if raw_finish is not None else "stop"
    if refusal:
        finish = "refusal"
    elif calls and finish in ("stop", "other"):  # Ollama and older vLLM say "stop" after tool calls
        finish = "tool_calls"
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    counted = base.Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")),
                    _int(details.get("cached_tokens")))
    return ModelResponse.read(data, text=text, default_model=default_model, provider=provider, usage=counted,
                              calls=calls, finish=finish, raw_finish=raw_finish, refusal=refusal)


class OpenAICompatProvider(RemoteProvider):
    """A model served by an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"
    response_schema: ClassVar[dict[str, Any]] = RESPONSE_SCHEMA

    path = "/chat/completions"
    reader = staticmethod(read_chat_completion)

    def headers(self, api_key: str) -> dict[str, str]:
        """Bearer authentication."""
        return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    def payload(self, request: ModelRequest) -> dict[str, Any]:
        """The chat completion request body."""
        return chat_request(request, model=self.config.model or "", max_tokens_param=self.config.max_tokens_param,
                            send_temperature=self.config.send_temperature)

