"""The provider interface every model (sandbox, OpenAI-compatible, Anthropic) implements, and its wire types.

A conversation is a list of :class:`Message`: ``system`` and ``user`` text, ``assistant`` turns that
may carry :class:`ToolCallRequest` s, and ``tool`` results answering one call each by its id. A
:class:`ModelRequest` may offer :class:`ToolSpec` s (JSON Schema parameters), say how the model may
use them (:data:`ToolChoice`) and ask for a structured final answer (``output_schema``). Every
provider answers with the same normalised :class:`ModelResponse`: text, the tool calls (arguments
parsed, or the raw text with an error when the model's JSON was broken), a normalised
:data:`FinishReason` beside the provider's own value, the refusal text and :class:`Usage`.

Tool results are data, never instructions: :meth:`Message.tool_result` serialises a tool's output
as JSON into the provider's tool-result slot and caps its size (a truncated result says so, with
the SHA-256 of the whole).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

__all__ = [
    "FINISH_REASONS",
    "MAX_CALL_ID",
    "MAX_TOOL_CALLS",
    "TOOL_RESULT_MAX_CHARS",
    "FinishReason",
    "ForceTool",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "Provider",
    "Role",
    "ToolCallRequest",
    "ToolChoice",
    "ToolNames",
    "ToolSpec",
    "Usage",
    "parse_arguments",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "refusal", "content_filter", "other"]
FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "tool_calls", "refusal", "content_filter", "other")
TOOL_RESULT_MAX_CHARS = 16_000  # a tool result longer than this reaches the model truncated, with its hash
MAX_TOOL_CALLS = 128  # per model turn; more is a malformed answer (a dependency failure), not work to do
MAX_CALL_ID = 256  # characters of a provider's tool call id
_ARGUMENTS_MAX_CHARS = 200_000  # a model's arguments text beyond this is not parsed at all
_WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WIRE_NAME_MAX = 64


@dataclass(frozen=True, slots=True)
class ForceTool:
    """``tool_choice`` forcing one named tool."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | ForceTool


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model sees it: its name, what it does, and a JSON Schema of its arguments object."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (for logs and checkpoints)."""
        return {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}


def parse_arguments(raw: Any) -> tuple[dict[str, Any], str | None, str | None]:
    """A model's tool arguments as ``(arguments, raw_text_if_invalid, error)``.

    Valid means a JSON object (an empty string counts as ``{}``: some servers send it for tools
    without parameters). Anything else keeps the raw text so the caller can feed the error back.
    """
    if isinstance(raw, Mapping):
        return dict(raw), None, None
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if raw is None or not text.strip():
        return {}, None, None
    if len(text) > _ARGUMENTS_MAX_CHARS:
        return {}, text[:_ARGUMENTS_MAX_CHARS], f"arguments are longer than {_ARGUMENTS_MAX_CHARS} characters"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return {}, text, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, text, f"arguments must be a JSON object, not {type(value).__name__}"
    return value, None, None


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One tool call a model asked for.

    ``arguments`` is the parsed JSON object; when the model's arguments were not a JSON object,
    ``arguments`` is empty, ``raw_arguments`` keeps what it sent and ``arguments_error`` says why.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str | None = None
    arguments_error: str | None = None

    @property
    def valid(self) -> bool:
        """Whether the arguments parsed as a JSON object."""
        return self.arguments_error is None

    def arguments_json(self) -> str:
        """The arguments as the model sent them (raw when invalid), for replaying the conversation."""
        return self.raw_arguments if self.raw_arguments is not None else json.dumps(self.arguments)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (for checkpoints and the decision log)."""
        out: dict[str, Any] = {"id": self.id, "name": self.name, "arguments": self.arguments}
        if self.raw_arguments is not None:
            out["raw_arguments"] = self.raw_arguments
        if self.arguments_error is not None:
            out["arguments_error"] = self.arguments_error
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCallRequest:
        """The inverse of :meth:`to_dict`."""
        return cls(id=str(data["id"]), name=str(data["name"]), arguments=dict(data.get("arguments") or {}),
                   raw_arguments=data.get("raw_arguments"), arguments_error=data.get("arguments_error"))

    @classmethod
    def parse(cls, id: str, name: str, raw: Any) -> ToolCallRequest:
        """A call from the wire: ``raw`` is the arguments text (OpenAI) or object (Anthropic)."""
        arguments, bad, error = parse_arguments(raw)
        return cls(id=id, name=name, arguments=arguments, raw_arguments=bad, arguments_error=error)


def _cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    note = (f"\n[truncated by Midwatch: the first {max_chars} of {len(text)} characters; "
            f"sha256 of the whole result {digest}]")
    return text[:max_chars] + note


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn.

    ``role`` is ``system``, ``user``, ``assistant`` (text and/or ``tool_calls``) or ``tool`` (the
    result of the call ``tool_call_id``; ``content`` is the result as JSON text, ``is_error`` marks a
    failed call or rejected arguments).
    """

    role: str
    content: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None  # the tool a result belongs to
    is_error: bool = False

    @classmethod
    def system(cls, text: str) -> Message:
        """A system instruction."""
        return cls("system", text)

    @classmethod
    def user(cls, text: str) -> Message:
        """A user turn."""
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str = "", tool_calls: Iterable[ToolCallRequest] = ()) -> Message:
        """A model turn: its text and the tool calls it made."""
        return cls("assistant", text, tuple(tool_calls))

    @classmethod
    def tool_result(cls, call: ToolCallRequest | str, output: Any, *, name: str | None = None,
                    is_error: bool = False, max_chars: int = TOOL_RESULT_MAX_CHARS) -> Message:
        """The result of ``call`` as data: ``output`` always serialised as JSON (a str becomes a JSON
        string), size-capped. For a failed call pass e.g. ``{"error": "..."}`` with ``is_error``."""
        call_id = call.id if isinstance(call, ToolCallRequest) else call
        if name is None and isinstance(call, ToolCallRequest):
            name = call.name
        text = json.dumps(output, default=str, ensure_ascii=False)
        return cls("tool", _cap(text, max_chars), tool_call_id=call_id, name=name, is_error=is_error)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (for checkpoints)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        if self.is_error:
            out["is_error"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """The inverse of :meth:`to_dict`."""
        return cls(role=str(data["role"]), content=str(data.get("content") or ""),
                   tool_calls=tuple(ToolCallRequest.from_dict(c) for c in data.get("tool_calls") or ()),
                   tool_call_id=data.get("tool_call_id"), name=data.get("name"),
                   is_error=bool(data.get("is_error", False)))


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call used. ``input_tokens`` includes ``cached_input_tokens`` (the part read from a cache)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        """Plain JSON."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_input_tokens": self.cached_input_tokens}


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What to ask a model.

    ``tools`` are offered under ``tool_choice`` (``auto``, ``none``, ``required`` or
    :class:`ForceTool`); ``parallel_tool_calls`` (None: the provider's default) allows several calls
    in one turn. ``output_schema`` asks for a structured final answer, which arrives as JSON text in
    :attr:`ModelResponse.text`.
    """

    model: str  # the alias the spec names
    messages: Sequence[Message]
    max_tokens: int = 1024
    temperature: float = 0.0
    output_schema: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific (sandbox script, latency)
    attempt: int = 1
    tools: Sequence[ToolSpec] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool | None = None


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """A model's answer, the same shape from every provider.

    ``finish_reason`` is normalised (``stop``, ``length``, ``tool_calls``, ``refusal``,
    ``content_filter``, ``other``); ``raw_finish_reason`` is what the provider said. Check it with
    :func:`runner.providers.finish.finish_failure` before using the answer.
    """

    text: str
    model: str
    provider: str
    usage: Usage
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    tool_calls: tuple[ToolCallRequest, ...] = ()
    finish_reason: FinishReason = "stop"
    raw_finish_reason: str | None = None
    refusal: str | None = None

    @classmethod
    def read(cls, data: Mapping[str, Any], *, text: str, default_model: str, provider: str, usage: Usage,
             calls: list[ToolCallRequest], finish: FinishReason, raw_finish: Any,
             refusal: str | None) -> ModelResponse:
        """The normalised answer a provider's reader assembled (cost and latency left at zero)."""
        return cls(text=text, model=str(data.get("model") or default_model), provider=provider, usage=usage,
                   tool_calls=tuple(calls), finish_reason=finish,
                   raw_finish_reason=None if raw_finish is None else str(raw_finish), refusal=refusal)

    def assistant_message(self) -> Message:
        """This answer as the ``assistant`` turn to append to the conversation."""
        return Message.assistant(self.text, self.tool_calls)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (for checkpoints and the decision log)."""
        return {"text": self.text, "model": self.model, "provider": self.provider, "usage": self.usage.to_dict(),
                "cost_usd": str(self.cost_usd), "tool_calls": [c.to_dict() for c in self.tool_calls],
                "finish_reason": self.finish_reason, "raw_finish_reason": self.raw_finish_reason,
                "refusal": self.refusal}


class ToolNames:
    """Midwatch tool names (``crm.lookup``) ↔ wire names (``crm__lookup``) for one request.

    Both APIs allow only ``[A-Za-z0-9_-]{1,64}`` in tool names. Dots become ``__``; a name still
    too long or colliding with another (or with a reserved name such as the structured-output tool)
    gets a short hash suffix. :meth:`real` maps a name a model sent back: an offered tool's wire
    name gives its real name, anything else is decoded best-effort (for error messages).
    """

    def __init__(self, names: Iterable[str], reserved: Iterable[str] = ()) -> None:
        self._to_wire: dict[str, str] = {}
        self._to_real: dict[str, str] = {}
        taken = set(reserved)
        for name in names:
            if name in self._to_wire:
                continue
            wire = self.encode(name)
            if wire in taken:
                wire = self._hashed(name)
            taken.add(wire)
            self._to_wire[name] = wire
            self._to_real[wire] = name

    @staticmethod
    def encode(name: str) -> str:
        """The wire form of ``name`` without regard to collisions."""
        wire = name.replace(".", "__")
        if _WIRE_NAME.match(wire):
            return wire
        return ToolNames._hashed(name)

    @staticmethod
    def _hashed(name: str) -> str:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", name.replace(".", "__"))[: _WIRE_NAME_MAX - 9] or "tool"
        return f"{stem}_{digest}"

    def wire(self, name: str) -> str:
        """The wire name of ``name`` (an offered tool's, else its plain encoding)."""
        return self._to_wire.get(name) or self.encode(name)

    def real(self, wire: str) -> str:
        """The Midwatch name of a wire name a model sent."""
        found = self._to_real.get(wire)
        if found is not None:
            return found
        return wire.replace("__", ".")[:200]


class Provider(Protocol):
    """Something that answers a chat request.

    Raises StepFailed(category=...) when no answer could be had (transport, auth, malformed reply);
    an answer that stopped early or refused is returned with its ``finish_reason``.
    """

    name: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...
