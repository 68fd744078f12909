"""Tool argument schemas: what a model is told a tool takes, and the check every call passes first.

Every tool has an ``args_schema`` (JSON Schema, Draft 2020-12, an object at the top): HTTP tools
declare it in their definition (``/v1/tools``, checked at upload), built-in tools in code. A tool
without one takes any JSON object. :func:`validate_args` runs before any call, for spec steps
and for a model's tool calls alike, and raises :class:`~runner.errors.ToolArgsInvalid` (category
``validation``) naming the JSON path; :func:`validate_call` also rejects a model's arguments that
were not a JSON object at all. :func:`tool_spec` is the :class:`~runner.providers.base.ToolSpec`
offered to a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.errors import ToolArgsInvalid
from runner.jsonschemas import validator_for
from runner.providers.base import ToolCallRequest, ToolSpec

__all__ = ["ANY_OBJECT", "args_schema_of", "tool_spec", "validate_args", "validate_call"]

ANY_OBJECT: dict[str, Any] = {"type": "object"}
_MESSAGE_MAX = 300


def _declared_schema(tool: Any) -> Mapping[str, Any]:
    """The tool's own arguments schema object (``ANY_OBJECT`` when it declares none): validated by identity,
    so it is compiled once."""
    return getattr(tool, "args_schema", None) or ANY_OBJECT


def args_schema_of(tool: Any) -> dict[str, Any]:
    """The tool's arguments schema (any JSON object when it declares none), as a copy to hand out."""
    return dict(_declared_schema(tool))


def tool_spec(tool: Any) -> ToolSpec:
    """How ``tool`` is offered to a model: name, description and arguments schema."""
    description = str(getattr(tool, "description", "") or "")
    return ToolSpec(name=str(tool.name), description=description, parameters=args_schema_of(tool))


def _path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def validate_args(tool: Any, args: Any) -> None:
    """Raise :class:`~runner.errors.ToolArgsInvalid` unless ``args`` is an object matching the tool's schema."""
    name = str(tool.name)
    if not isinstance(args, dict):
        raise ToolArgsInvalid(name, f"arguments must be a JSON object, not {type(args).__name__}")
    schema = _declared_schema(tool)
    if schema is ANY_OBJECT:  # no schema declared: any object will do, and it is one
        return
    error = validator_for(schema).best_violation(args)  # linear-time patterns (RE2)
    if error is not None:
        raise ToolArgsInvalid(name, error.message[:_MESSAGE_MAX], json_path=_path(error.path))


def validate_call(tool: Any, call: ToolCallRequest) -> dict[str, Any]:
    """A model's tool call checked like :func:`validate_args` (also its unparseable arguments);
    returns the arguments to call the tool with."""
    if call.arguments_error is not None:
        raise ToolArgsInvalid(str(tool.name), call.arguments_error[:_MESSAGE_MAX])
    validate_args(tool, call.arguments)
    return call.arguments
