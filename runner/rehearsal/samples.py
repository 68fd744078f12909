"""Sample values for a JSON schema: the rehearsal's inputs and the upstream's tool and model answers.

:func:`sample_valid` makes a varied value valid against a schema (enums, bounds, formats, required and some
optional properties, local ``$ref``), seeded, so the same seed gives the same values; it falls back to the
minimal example when the varied one does not validate, and never builds more than a few thousand values
whatever a tenant's schema asks for. :func:`make_items` makes a rehearsal's inputs: a bundle's sample
items in turn, else values made from the spec's ``input.schema``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.jsonschemas import validator_for
from runner.providers.scripted import example_for_schema, json_type
from runner.rehearsal.faults import rng

if TYPE_CHECKING:
    from runner.rehearsal.plan import Source

__all__ = ["MAX_SAMPLE_VALUES", "make_items", "sample_valid"]

_WORDS = ("ann", "bob", "carol", "dan", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj")


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


MAX_SAMPLE_VALUES = 2_000  # a tenant's schema cannot make the rehearsal build a huge value


class _Sampler:
    """Varied values for a schema (enums, bounds, formats, required and some optional properties, local
    ``$ref``), at most :data:`MAX_SAMPLE_VALUES` values and 8 levels deep."""

    def __init__(self, r: Any, root: dict[str, Any]) -> None:
        self.r = r
        self.root = root
        self.left = MAX_SAMPLE_VALUES

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node.get(part) if isinstance(node, dict) else None
            return node if isinstance(node, dict) else {}
        return schema

    def value(self, schema: Any, name: str, index: int, depth: int = 0) -> Any:  # noqa: PLR0911
        self.left -= 1
        if self.left < 0 or depth > 8:
            return None
        if not isinstance(schema, dict):
            return f"{name}-{index}"
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.r.choice(schema["enum"])
        for key in ("anyOf", "oneOf", "allOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(schema[key][0], name, index, depth + 1)
        kind = json_type(schema)
        if kind == "object":
            return self._object(schema, index, depth)
        if kind == "array":
            low = min(schema["minItems"], 50) if isinstance(schema.get("minItems"), int) else 1
            high = schema["maxItems"] if isinstance(schema.get("maxItems"), int) else low + 2
            count = self.r.randint(low, max(low, min(high, low + 2)))
            return [self.value(schema.get("items", {}), name, index, depth + 1) for _ in range(count)]
        if kind in ("integer", "number"):
            low = _number(schema.get("minimum", schema.get("exclusiveMinimum")), 1.0)
            high = _number(schema.get("maximum", schema.get("exclusiveMaximum")), max(low, 0.0) + 5000)
            number = self.r.uniform(low, max(low, high))
            return int(number) if kind == "integer" else round(number, 2)
        if kind == "boolean":
            return self.r.random() < 0.5
        return None if kind == "null" else self._text(schema, name, index)

    def _object(self, schema: dict[str, Any], index: int, depth: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = [k for k in schema.get("required") or [] if isinstance(k, str)]
        out = {k: self.value(props.get(k, {}), k, index, depth + 1) for k in required}
        for k, sub in props.items():
            if k not in out and self.r.random() < 0.5:
                out[k] = self.value(sub, k, index, depth + 1)
        return out

    def _text(self, schema: dict[str, Any], name: str, index: int) -> str:
        fmt = schema.get("format")
        r = self.r
        word = r.choice(_WORDS)
        lowered = name.lower()
        if fmt == "email" or "email" in lowered:
            text = f"{word}.{index}@example.com"
        elif fmt == "date":
            text = f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        elif fmt == "date-time":
            text = f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T03:{r.randint(0, 59):02d}:00Z"
        elif fmt in ("uri", "url"):
            text = f"https://example.com/{word}/{index}"
        elif lowered == "id" or lowered.endswith("_id"):
            text = f"{name.upper().removesuffix('_ID')[:3] or 'ID'}-{1000 + index}"
        else:
            text = f"{word} {name} {index}"
        min_length = schema["minLength"] if isinstance(schema.get("minLength"), int) else 0
        max_length = schema["maxLength"] if isinstance(schema.get("maxLength"), int) else None
        text = text.ljust(min(min_length, 10_000), "x")
        return text[:max_length] if max_length is not None else text


def _example_size(schema: Any, depth: int = 0, limit: int = 10_000) -> int:
    """How many values ``example_for_schema`` would build for ``schema`` (stops counting past ``limit``)."""
    if not isinstance(schema, dict) or depth > 8:
        return 1
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return 1 + _example_size(schema[key][0], depth + 1, limit)
    total = 1
    if schema.get("type") == "array" or "items" in schema:
        count = min(schema["minItems"], 10) if isinstance(schema.get("minItems"), int) else 0
        total += count * _example_size(schema.get("items", {}), depth + 1, limit)
    props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
    for name in schema.get("required") or []:
        if total > limit:
            break
        total += _example_size(props.get(name, {}), depth + 1, limit)
    return min(total, limit + 1)


def sample_valid(schema: dict[str, Any] | None, seed: int, *parts: object, name: str = "value", index: int = 0) -> Any:
    """A value valid against ``schema`` when one can be made (a varied sample, else the minimal example), never
    more than a few thousand values whatever the schema asks for."""
    if schema is None:
        return None
    value = _Sampler(rng(seed, "sample", *parts), schema).value(schema, name, index)
    if validator_for(schema).best_violation(value) is None or _example_size(schema) > 10_000:
        return value
    return example_for_schema(schema)


def make_items(source: Source, count: int, seed: int) -> list[Any]:
    """``count`` inputs: the bundle's sample items in turn, else values made from ``input.schema`` (seeded)."""
    if source.sample_items:
        return [source.sample_items[i % len(source.sample_items)] for i in range(count)]
    schema = source.spec.input.schema_
    if schema is None:
        return [{"id": f"item-{i + 1}"} for i in range(count)]
    return [sample_valid(schema, seed, "item", i, name="item", index=i + 1) for i in range(count)]
