"""JSON Schema helpers shared by every place that checks tenant-declared schemas.

Two functions, one home: :func:`check_schema` (is this a valid Draft 2020-12 schema? raised at
upload, so a broken schema never reaches a run) and :func:`validator_for` (a validator, built once
per distinct schema and cached, so the hot path of a tool call does not recompile it).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator

__all__ = ["check_schema", "validator_for"]

_CACHE_SIZE = 512


def check_schema(schema: Any) -> None:
    """Raise :class:`jsonschema.SchemaError` when ``schema`` is not a valid Draft 2020-12 schema."""
    Draft202012Validator.check_schema(schema)


@lru_cache(maxsize=_CACHE_SIZE)
def _cached(canonical: str) -> Validator:
    schema = json.loads(canonical)
    validator: Validator = Draft202012Validator(schema)
    return validator


def validator_for(schema: Any) -> Validator:
    """A Draft 2020-12 validator for ``schema`` (cached by the schema's canonical JSON)."""
    return _cached(json.dumps(schema, sort_keys=True, separators=(",", ":")))
