"""Anthropic messages API (``POST {base_url}/v1/messages``) over the egress client.

System messages go to the top-level ``system`` field. The API has no JSON-schema response
format here, so an ``output_schema`` is stated in the system prompt and the engine validates
the answer (:func:`~runner.providers.remote.parse_structured_output`).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from runner.errors import StepFailed
from runner.providers.base import ModelRequest, Usage
from runner.providers.remote import ModelConfig, RemoteProvider

__all__ = ["DEFAULT_BASE_URL", "AnthropicProvider", "ModelConfig"]

DEFAULT_BASE_URL = "https://api.anthropic.com"


class AnthropicProvider(RemoteProvider):
    """A model served by the Anthropic messages API."""

    name = "anthropic"
    response_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["content"],
        "properties": {
            "model": {"type": "string"},
            "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
            "usage": {"type": "object", "properties": {
                "input_tokens": {"type": "integer", "minimum": 0},
                "output_tokens": {"type": "integer", "minimum": 0}}},
        },
    }

    def endpoint(self) -> str:
        """``{base_url}/v1/messages``."""
        return f"{(self.config.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1/messages"

    def headers(self, api_key: str) -> dict[str, str]:
        """``x-api-key`` and ``anthropic-version``."""
        return {"x-api-key": api_key, "anthropic-version": self.config.anthropic_version,
                "Accept": "application/json"}

    def payload(self, request: ModelRequest) -> dict[str, Any]:
        """The messages request body."""
        system = [m.content for m in request.messages if m.role == "system"]
        if request.output_schema is not None:
            system.append("Reply with only a JSON value matching this JSON schema, no prose:\n"
                          + json.dumps(request.output_schema))
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": [{"role": m.role, "content": m.content}
                         for m in request.messages if m.role != "system"],
        }
        if system:
            body["system"] = "\n\n".join(system)
        return body

    def finish_reason(self, data: Any) -> str | None:
        """``stop_reason`` (end_turn, max_tokens, stop_sequence, refusal, ...)."""
        reason = data.get("stop_reason")
        return str(reason) if reason else None

    def read(self, data: Any) -> tuple[str, Usage, str]:
        """Joined text blocks, token usage and the serving model's id."""
        text = "".join(str(b.get("text", "")) for b in data["content"] if b.get("type") == "text")
        if not text and data.get("stop_reason") == "refusal":
            raise StepFailed("dependency", f"model {self.config.alias!r} refused to answer",
                             details={"retryable": False})
        usage = data.get("usage") or {}
        return (text, Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
                str(data.get("model") or self.config.model))
