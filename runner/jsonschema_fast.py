"""The compiled fast path of a schema check (jsonschema-rs): it may only confirm what the reference validator
in :mod:`runner.jsonschemas` accepts.

:func:`fast_validator` compiles a schema made only of keywords whose meaning and cost are the same in both
validators, and :func:`plain_values` tells whether a value holds only what JSON decodes to, and counts its
values so that the reference's work budget holds on the fast path too. For anything else the reference
validator (RE2 patterns, offline, work budget) decides alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema_rs

__all__ = ["MAX_FAST_DEPTH", "FastSchema", "fast_validator", "plain_values"]

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


class FastSchema:
    """The compiled check of one schema, and how many keywords it holds.

    Without ``$ref`` each keyword meets each value of an instance at most once, so checking a value of ``n``
    values is at most ``keywords * n`` keyword steps: :meth:`within` says whether that fits the reference
    validator's work budget, which the fast path must not exceed (a schema the reference stops for too much
    work must not be called valid here).
    """

    __slots__ = ("_validator", "keywords")

    def __init__(self, validator: Any, keywords: int) -> None:
        self._validator = validator
        self.keywords = keywords

    def within(self, values: int, budget: Callable[[int], int]) -> bool:
        return values >= 0 and self.keywords * values <= budget(values)

    def is_valid(self, instance: Any) -> bool:
        return bool(self._validator.is_valid(instance))


def _keywords(schema: Any) -> int:
    if not isinstance(schema, Mapping):
        return 0
    count = len(schema)
    for key, value in schema.items():
        if key == "properties" and isinstance(value, Mapping):
            count += sum(_keywords(v) for v in value.values())
        elif key in _FAST_SUBSCHEMA:
            count += _keywords(value)
        elif key in _FAST_SUBSCHEMAS and isinstance(value, list):
            count += sum(_keywords(v) for v in value)
    return count


def fast_validator(schema: Mapping[str, Any] | bool) -> FastSchema | None:
    """A compiled (Rust) validity check for a schema of the common keywords, or None."""
    if not _fast_eligible(schema, [_FAST_NODES]):
        return None
    try:
        validator = jsonschema_rs.Draft202012Validator(schema if isinstance(schema, bool) else dict(schema),
                                                       validate_formats=False)
    except Exception:
        return None
    return FastSchema(validator, _keywords(schema))


_SCALARS = frozenset({str, int, float, bool, type(None)})
_EXACT = frozenset({str, int, bool, type(None)})  # JSON scalars needing no further look (a float may be NaN)
MAX_FAST_DEPTH = 64


def plain_values(value: Any, depth: int) -> int:
    """How many values ``value`` holds (as the reference validator counts them: every container and scalar),
    or -1 unless it holds only what JSON decodes to (exact dict with str keys, list, str, int, float, bool,
    None): the compiled validator reads a tuple as an array and a Decimal as a number, the reference does not."""
    kind = type(value)
    if kind in _SCALARS:
        return 1 if kind is not float or math.isfinite(value) else -1
    if depth <= 0 or (kind is not dict and kind is not list):
        return -1
    total = 1
    for key, item in (value.items() if kind is dict else enumerate(value)):
        if kind is dict and type(key) is not str:
            return -1
        if type(item) in _EXACT:  # scalars other than floats inline: no call per field
            total += 1
            continue
        found = plain_values(item, depth - 1)
        if found < 0:
            return -1
        total += found
    return total
