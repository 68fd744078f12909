"""Contract checks against the official SDKs' types (``openai`` and ``anthropic``, dev dependencies only).

A request body Midwatch sends must be a valid ``CompletionCreateParamsNonStreaming`` /
``MessageCreateParamsNonStreaming``; a response body a fake returns must be a valid ``ChatCompletion``
/ ``Message``. Two independent checks each:

- pydantic, strict, through a ``TypeAdapter`` over the SDK type (its lazily validated ``Iterable``
  fields are drained, so every message and tool is really checked);
- a structural walk over the same type hints that also rejects keys the type does not declare
  (pydantic ignores unknown keys of a TypedDict, and the SDKs' response models allow extras), so
  a misspelt field (``tool_call_ids``) or a field from the other API cannot slip through.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pydantic
import typing_extensions
from anthropic.types import Message as AnthropicMessage
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

__all__ = ["ContractError", "anthropic_request", "anthropic_response", "openai_request", "openai_response"]

_WRAPPERS = {typing.Annotated, typing_extensions.Required, typing_extensions.NotRequired,
             typing_extensions.ReadOnly, typing.Required, typing.NotRequired}
_SEQUENCES = {list, tuple, collections.abc.Iterable, collections.abc.Sequence, collections.abc.Iterator}
_MAPPINGS = {dict, collections.abc.Mapping}


class ContractError(AssertionError):
    """A body does not match the SDK type."""


@cache
def _hints(tp: Any) -> dict[str, Any]:
    return get_type_hints(tp, include_extras=True)


def _is_typeddict(tp: Any) -> bool:
    return typing_extensions.is_typeddict(tp)


def _walk(tp: Any, value: Any, path: str) -> list[str]:  # noqa: PLR0911 - one case per kind of type
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return []
    if origin in _WRAPPERS:
        return _walk(args[0], value, path)
    if tp is None or tp is type(None):
        return [] if value is None else [f"{path}: expected null, got {type(value).__name__}"]
    if origin is Union or origin is types.UnionType:
        best: list[str] | None = None
        for member in args:
            errors = _walk(member, value, path)
            if not errors:
                return []
            if best is None or len(errors) < len(best):
                best = errors
        return best or [f"{path}: matches no member of {tp}"]
    if origin is Literal:
        ok = any(value == a and type(value) is type(a) for a in args)
        return [] if ok else [f"{path}: {value!r} is not one of {list(args)}"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {type(value).__name__}"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if tp is float:
        return [] if isinstance(value, int | float) and not isinstance(value, bool) else [f"{path}: expected a number"]
    if _is_typeddict(tp):
        return _fields(_hints(tp), set(tp.__required_keys__), value, path, tp.__name__)
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        fields = {(f.alias or name): f for name, f in tp.model_fields.items()}
        required = {k for k, f in fields.items() if f.is_required()}
        return _fields({k: f.annotation for k, f in fields.items()}, required, value, path, tp.__name__)
    if origin in _SEQUENCES or tp in _SEQUENCES:
        if not isinstance(value, list):
            return [f"{path}: expected an array, got {type(value).__name__}"]
        item = args[0] if args else Any
        return [e for i, v in enumerate(value) for e in _walk(item, v, f"{path}[{i}]")]
    if origin in _MAPPINGS or tp in _MAPPINGS:
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        item = args[1] if len(args) == 2 else Any
        return [e for k, v in value.items() for e in _walk(item, v, f"{path}.{k}")]
    if getattr(tp, "__name__", "") == "SequenceNotStr":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return [] if ok else [f"{path}: expected an array of strings"]
    raise NotImplementedError(f"{path}: the contract walker does not know {tp!r}")


def _fields(hints: dict[str, Any], required: set[str], value: Any, path: str, name: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({name}), got {type(value).__name__}"]
    errors = [f"{path}: {name} has no field {k!r}" for k in value if k not in hints]
    errors += [f"{path}: {name} requires {k!r}" for k in sorted(required) if k not in value]
    for key, item in value.items():
        if key in hints:
            errors += _walk(hints[key], item, f"{path}.{key}")
    return errors


def _drain(value: Any) -> Any:
    """Consume pydantic's lazy validators of ``Iterable`` fields so their items are validated too."""
    if type(value).__name__ == "ValidatorIterator":
        return [_drain(v) for v in value]
    if isinstance(value, dict):
        return {k: _drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_drain(v) for v in value]
    return value


@cache
def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


def _check(tp: Any, body: Any, what: str) -> None:
    errors = _walk(tp, body, "$")
    if errors:
        raise ContractError(f"{what}: " + "; ".join(errors[:10]))
    try:
        _drain(_adapter(tp).validate_python(body, strict=True))
    except pydantic.ValidationError as exc:
        raise ContractError(f"{what}: {exc}") from None


def openai_request(body: Any) -> None:
    """``body`` is a valid ``openai.types.chat.CompletionCreateParamsNonStreaming``."""
    _check(CompletionCreateParamsNonStreaming, body, "OpenAI chat completion request")


def anthropic_request(body: Any) -> None:
    """``body`` is a valid ``anthropic.types.MessageCreateParamsNonStreaming``."""
    _check(MessageCreateParamsNonStreaming, body, "Anthropic messages request")


def openai_response(data: Any) -> ChatCompletion:
    """``data`` is a valid ``openai.types.chat.ChatCompletion`` (returned, built by the SDK)."""
    errors = _walk(ChatCompletion, data, "$")
    if errors:
        raise ContractError("OpenAI chat completion: " + "; ".join(errors[:10]))
    return ChatCompletion.model_validate(data, strict=True)


def anthropic_response(data: Any) -> AnthropicMessage:
    """``data`` is a valid ``anthropic.types.Message`` (returned, built by the SDK)."""
    errors = _walk(AnthropicMessage, data, "$")
    if errors:
        raise ContractError("Anthropic message: " + "; ".join(errors[:10]))
    return AnthropicMessage.model_validate(data, strict=True)
