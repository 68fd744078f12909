"""OpenAI-compatible chat completions (``POST {base_url}/chat/completions``) over the egress client.

Works with any compatible server (OpenAI, vLLM, llama.cpp, Ollama's ``/v1``, the sandbox
upstream). With ``output_schema`` the request asks for ``response_format: json_schema``; the
engine parses and validates the text (:func:`~runner.providers.remote.parse_structured_output`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from runner.errors import StepFailed
from runner.providers.base import ModelRequest, Usage
from runner.providers.remote import ModelConfig, RemoteProvider

__all__ = ["ModelConfig", "OpenAICompatProvider"]


class OpenAICompatProvider(RemoteProvider):
    """A model served by an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"
    response_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["choices"],
        "properties": {
            "model": {"type": "string"},
            "choices": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["message"],
                "properties": {"message": {"type": "object", "properties": {
                    "content": {"type": ["string", "null"]}}}}}},
            "usage": {"type": "object", "properties": {
                "prompt_tokens": {"type": "integer", "minimum": 0},
                "completion_tokens": {"type": "integer", "minimum": 0}}},
        },
    }

    def endpoint(self) -> str:
        """``{base_url}/chat/completions``."""
        return f"{(self.config.base_url or '').rstrip('/')}/chat/completions"

    def headers(self, api_key: str) -> dict[str, str]:
        """Bearer authentication."""
        return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    def payload(self, request: ModelRequest) -> dict[str, Any]:
        """The chat completion request body."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.output_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": request.output_schema}}
        return body

    def finish_reason(self, data: Any) -> str | None:
        """The first choice's ``finish_reason`` (stop, length, content_filter, ...)."""
        reason = data["choices"][0].get("finish_reason")
        return str(reason) if reason else None

    def read(self, data: Any) -> tuple[str, Usage, str]:
        """Text of the first choice, token usage and the serving model's id."""
        message = data["choices"][0]["message"]
        content = message.get("content")
        if content is None:
            refusal = message.get("refusal")
            raise StepFailed("dependency", f"model {self.config.alias!r} returned no content"
                             + (f" (refusal: {str(refusal)[:200]})" if refusal else ""),
                             details={"retryable": False})
        usage = data.get("usage") or {}
        return (str(content),
                Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                str(data.get("model") or self.config.model))
