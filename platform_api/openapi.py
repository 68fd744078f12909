"""The OpenAPI document says what the API enforces.

Litestar builds a Pydantic model's schema itself and loses some of what the model enforces: every model
is open to extra fields (``additionalProperties``), ``Field(pattern=...)`` disappears, and so does a bound of
zero (``ge=0``). A client (or a fuzzer) reading the document would then send requests the API refuses with
a 422. :class:`StrictModelsPlugin` completes the schema of every request model (``extra="forbid"``: the
``In`` models and the other request bodies) from the model's own JSON Schema: ``additionalProperties:
false``, and each property's patterns, bounds, lengths and sizes. :class:`OptionalBodyOperation` marks a
body the route lets a caller leave out as not required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar._openapi.schema_generation import SchemaCreator
from litestar.openapi.spec import Operation, Reference, RequestBody, Schema
from litestar.plugins.pydantic import PydanticSchemaPlugin
from litestar.typing import FieldDefinition
from pydantic import BaseModel

__all__ = ["OptionalBodyOperation", "StrictModelsPlugin"]

# JSON Schema keyword -> Litestar Schema attribute, for what Litestar's own conversion drops
_CONSTRAINTS = {"pattern": "pattern", "minimum": "minimum", "maximum": "maximum",
                "exclusiveMinimum": "exclusive_minimum", "exclusiveMaximum": "exclusive_maximum",
                "minLength": "min_length", "maxLength": "max_length", "minItems": "min_items",
                "maxItems": "max_items", "enum": "enum"}


class StrictModelsPlugin(PydanticSchemaPlugin):
    """Litestar's Pydantic schema plugin, completed for request models from their own JSON Schema. Listed
    before ``PydanticPlugin`` so Litestar asks it first."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        model = field_definition.annotation
        if isinstance(model, type) and issubclass(model, BaseModel) and model.model_config.get("extra") == "forbid":
            schema.additional_properties = False
            own = model.model_json_schema(by_alias=True, mode="validation").get("properties", {})
            for name, prop in (schema.properties or {}).items():
                if name in own and isinstance(prop, Schema):
                    _complete(prop, own[name])
        return schema


def _complete(target: Schema, source: dict[str, Any]) -> None:
    """Copy the constraints Litestar dropped from ``source`` (JSON Schema) into ``target``, into array items
    too; an optional field's constraints come from its non-null branch."""
    branches = [b for b in source.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        source = {**branches[0], **{k: v for k, v in source.items() if k != "anyOf"}}
    for keyword, attribute in _CONSTRAINTS.items():
        if keyword in source and getattr(target, attribute) is None:
            setattr(target, attribute, source[keyword])
    alternatives = source.get("anyOf", [])
    if target.one_of and len(target.one_of) == len(alternatives):  # str | int: Litestar's oneOf, pydantic's anyOf
        for branch, own in zip(target.one_of, alternatives, strict=True):
            if isinstance(branch, Schema):
                _complete(branch, own)
    items = source.get("items")
    if isinstance(items, dict) and isinstance(target.items, Schema) and not isinstance(target.items, Reference):
        _complete(target.items, items)


@dataclass
class OptionalBodyOperation(Operation):
    """The operation of a route whose JSON body may be left out (``data: JSONBody[X | None] = None``):
    Litestar marks every body required."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False
