"""The provider interface every model (sandbox, OpenAI-compatible, Anthropic) implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

__all__ = ["Message", "ModelRequest", "ModelResponse", "Provider", "Usage"]


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str  # the alias the spec names
    messages: list[Message]
    max_tokens: int = 1024
    temperature: float = 0.0
    output_schema: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific (sandbox answers, latency)
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str
    model: str
    provider: str
    usage: Usage
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    finish_reason: str | None = None  # as the provider said it (stop, length, end_turn, max_tokens, ...)


class Provider(Protocol):
    """Something that answers a chat request. Raises StepFailed(category=...) on failure."""

    name: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...
