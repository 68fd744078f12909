"""The compiled fast path of a schema check (jsonschema-rs): it may only confirm what the reference validator
in :mod:`runner.jsonschemas` accepts.

:func:`fast_validator` compiles a schema made only of keywords whose meaning and cost are the same in both
validators, and :func:`plain_json` tells whether a value holds only what JSON decodes to; for anything else
the reference validator (RE2 patterns, offline, work budget) decides alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jsonschema_rs

__all__ = ["MAX_FAST_DEPTH", "fast_validator", "plain_json"]

# The keywords whose meaning the compiled validator (jsonschema-rs) shares exactly with runner.jsonschemas', and
# whose work is linear without a budget: no $ref (cycles, fan-out), no patterns (RE2 here, another engine
# there), no multipleOf (float arithmetic), no uniqueItems, no format (an annotation here).
_FAST_SUBSCHEMA = frozenset({"items", "not", "additionalProperties"})
_FAST_SUBSCHEMAS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_FAST_DATA = frozenset({"type", "required", "enum", "const", "minimum", "maximum", "exclusiveMinimum",
                        "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties",
                        "maxProperties", "title", "description", "default", "examples", "$comment", "$schema",
                        "deprecated", "readOnly", "writeOnly"})
_FAST_NODES = 200  # schema nodes: with no $ref a node meets each value of the instance at most once


def _fast_eligible(schema: Any, budget: list[int]) -> bool:
    """Whether ``schema`` uses only the keywords above, in at most `_FAST_NODES` (sub)schemas."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    return all(_fast_keyword(key, value, budget) for key, value in schema.items())


def _fast_keyword(key: str, value: Any, budget: list[int]) -> bool:
    if key in _FAST_DATA:
        return True
    if key == "properties":
        return isinstance(value, Mapping) and all(_fast_eligible(v, budget) for v in value.values())
    if key in _FAST_SUBSCHEMA:
        return _fast_eligible(value, budget)
    return key in _FAST_SUBSCHEMAS and isinstance(value, list) and all(_fast_eligible(v, budget) for v in value)


def fast_validator(schema: Mapping[str, Any] | bool) -> Any:
    """A compiled (Rust) validity check for a schema of the common keywords, or None."""
    if not _fast_eligible(schema, [_FAST_NODES]):
        return None
    try:
        return jsonschema_rs.Draft202012Validator(schema if isinstance(schema, bool) else dict(schema),
                                                  validate_formats=False)
    except Exception:
        return None


_SCALARS = frozenset({str, int, float, bool, type(None)})
_EXACT = frozenset({str, int, bool, type(None)})  # JSON scalars needing no further look (a float may be NaN)
MAX_FAST_DEPTH = 64


def plain_json(value: Any, depth: int) -> bool:
    """Whether ``value`` holds only what JSON decodes to (exact dict with str keys, list, str, int, float, bool,
    None): the compiled validator reads a tuple as an array and a Decimal as a number, the reference does not."""
    kind = type(value)
    if kind in _SCALARS:
        return kind is not float or math.isfinite(value)
    if depth <= 0:
        return False
    if kind is dict:  # scalars other than floats inline: no call per field
        return all(type(k) is str and (type(v) in _EXACT or plain_json(v, depth - 1)) for k, v in value.items())
    if kind is list:
        return all(type(v) in _EXACT or plain_json(v, depth - 1) for v in value)
    return False
