"""The one place tenant JSON Schemas are checked, compiled and evaluated: linear-time, bounded, offline.

Every JSON Schema a tenant controls (a spec's ``input.schema`` and ``output_schema``, a tool's
``response_schema``, a model's structured-output schema) goes through this module, never through
``jsonschema`` directly, because the library's defaults are unsafe for hostile schemas:

- **Regular expressions run on RE2.** ``pattern``, ``patternProperties`` (and the
  ``additionalProperties`` check that consults them) use RE2, whose matching is linear in the input,
  instead of Python's backtracking ``re`` (``^(a+)+$`` against 30 characters holds the interpreter
  for seconds, for every tenant). :func:`check_schema` refuses, with the pattern's path, what RE2
  cannot run (backreferences, lookaround, possessive quantifiers...). ``unevaluatedProperties`` is
  refused next to ``patternProperties`` because the library evaluates that pair with Python ``re``.
  ``format`` is an annotation here (no format checker is enabled), so ``format: regex`` never
  compiles a tenant's string with Python ``re`` either.
- **No network.** ``$ref`` must point into the same document (``#...``); the library would otherwise
  fetch a remote ``$ref`` with ``urlopen`` at validation time (a server-side request to any URL,
  cloud metadata included). Resolution uses a registry that refuses to retrieve anything.
- **Bounded size and work.** A schema has at most :data:`MAX_SCHEMA_NODES` values nested at most
  :data:`MAX_SCHEMA_DEPTH` deep, each pattern at most :data:`MAX_PATTERN_CHARS` characters. A
  validation evaluates at most :data:`BASE_STEPS` + :data:`STEPS_PER_VALUE` * (values in the
  instance) keywords; a schema whose ``$ref``/``anyOf`` structure would take longer (exponential
  fan-out, reference cycles) stops with a violation saying so instead of stalling the process.
  ``uniqueItems`` hashes items (linear) instead of the library's pairwise comparison (quadratic).

Public API: :func:`check_schema` (upload time: raises :class:`~runner.errors.SchemaInvalid`, code
``schema_invalid``, with the path inside the schema), :func:`validator_for` (a compiled, cached
:class:`CompiledSchema`), :func:`best_violation` (the most relevant :class:`Violation` with its
path, or None).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import re2
import referencing
import referencing.exceptions
from jsonschema.exceptions import ValidationError, best_match

from runner.errors import SchemaInvalid
from runner.jsonschema_fast import MAX_FAST_DEPTH, fast_validator, plain_values

__all__ = [
    "BASE_STEPS",
    "MAX_PATTERN_CHARS",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "STEPS_PER_VALUE",
    "CompiledSchema",
    "Violation",
    "best_violation",
    "check_schema",
    "compile_pattern",
    "json_path",
    "validator_for",
]

MAX_SCHEMA_NODES = 10_000
MAX_SCHEMA_DEPTH = 32
MAX_PATTERN_CHARS = 1_000
BASE_STEPS = 20_000
STEPS_PER_VALUE = 20
_RE2_MAX_MEM = 4 << 20  # bytes per compiled pattern (program and DFA cache); larger patterns are refused
_SUPPORTED_DIALECTS = frozenset({"https://json-schema.org/draft/2020-12/schema",
                                 "https://json-schema.org/draft/2020-12/schema#"})
_MESSAGE_CHARS = 300


# ---------------------------------------------------------------------------------------------
# RE2 patterns


@dataclass(frozen=True, slots=True)
class _BadPattern:
    reason: str


_pattern_lock = threading.Lock()
_patterns: OrderedDict[str, Any] = OrderedDict()
_PATTERN_CACHE = 1024


def _re2_options() -> Any:
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    return options


def compile_pattern(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 (cached); raise SchemaInvalid when RE2 cannot run it."""
    with _pattern_lock:
        found = _patterns.get(pattern)
        if found is not None:
            _patterns.move_to_end(pattern)
    if found is None:
        found = _compile_uncached(pattern)
        with _pattern_lock:
            _patterns[pattern] = found
            while len(_patterns) > _PATTERN_CACHE:
                _patterns.popitem(last=False)
    if isinstance(found, _BadPattern):
        raise SchemaInvalid(found.reason)
    return found


def _compile_uncached(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN_CHARS:
        return _BadPattern(f"pattern is {len(pattern)} characters long; at most {MAX_PATTERN_CHARS} are allowed")
    try:
        return re2.compile(pattern, _re2_options())
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return _BadPattern(f"pattern {_short(pattern)} cannot run in linear time (RE2: {detail}); "
                           "backreferences, lookahead/lookbehind and possessive quantifiers are not supported")


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


# ---------------------------------------------------------------------------------------------
# Keyword validators replacing the library's (same semantics, RE2 and linear time)


def _pattern(validator: Any, patrn: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and isinstance(patrn, str) and not _search(patrn, instance):
        yield ValidationError(f"{_short(instance)} does not match {_short(patrn)}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        for key, value in instance.items():
            if _search(patrn, key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _extra_properties(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [key for key in instance
            if key not in declared and not any(_search(p, key) for p in patterns)]


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _extra_properties(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif allowed is False and extras:
        shown = ", ".join(_short(e) for e in sorted(extras)[:10]) + (" ..." if len(extras) > 10 else "")
        yield ValidationError(f"additional properties are not allowed ({shown} unexpected)")


def _freeze(value: Any) -> Any:
    """A hashable form under JSON Schema equality: 1 == 1.0, true != 1, objects ignore key order."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list | tuple):
        return ("array", tuple(_freeze(v) for v in value))
    if isinstance(value, Mapping):
        return ("object", frozenset((k, _freeze(v)) for k, v in value.items()))
    return ("other", repr(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for index, item in enumerate(instance):
        frozen = _freeze(item)
        if frozen in seen:
            yield ValidationError(f"the array has non-unique elements (item {index} repeats an earlier one)")
            return
        seen.add(frozen)


# ---------------------------------------------------------------------------------------------
# The work budget


class _OverBudget(Exception):
    """Raised inside a validation that evaluated more keywords than its budget."""


_budget = threading.local()


def _counted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        left = getattr(_budget, "left", 0) - 1
        _budget.left = left
        if left < 0:
            raise _OverBudget
        return keyword(validator, value, instance, schema)

    return counted


def _budget_for(values: int) -> int:
    """The keyword steps a validation of an instance of ``values`` values may take."""
    return BASE_STEPS + STEPS_PER_VALUE * values


def _count_values(instance: Any) -> int:
    stack, count = [instance], 0
    while stack:
        current = stack.pop()
        count += 1
        if isinstance(current, Mapping):
            stack.extend(current.values())
        elif isinstance(current, list | tuple):
            stack.extend(current)
    return count


def _refuse_retrieval(uri: str) -> Any:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


_Base = jsonschema.Draft202012Validator
_SafeValidator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    _Base,
    validators={
        **{name: _counted(fn) for name, fn in _Base.VALIDATORS.items()},
        "pattern": _counted(_pattern),
        "patternProperties": _counted(_pattern_properties),
        "additionalProperties": _counted(_additional_properties),
        "uniqueItems": _counted(_unique_items),
    },
)
_OFFLINE: Any = referencing.Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------------------
# Checking a schema


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(path: list[str | int]) -> str:
    return "/".join(str(p) for p in path) or "(root)"


def _walk(schema: Any) -> Iterator[tuple[list[str | int], Mapping[str, Any]]]:
    """Yield (path, mapping) for every mapping in the document; bound its size and depth."""
    stack: list[tuple[list[str | int], Any]] = [([], schema)]
    nodes = 0
    while stack:
        path, node = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise SchemaInvalid(f"the schema has more than {MAX_SCHEMA_NODES} values")
        if len(path) > MAX_SCHEMA_DEPTH:
            raise SchemaInvalid(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels at {_where(path)}",
                                path=_where(path))
        if isinstance(node, Mapping):
            yield path, node
            stack.extend(([*path, str(k)], v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(([*path, i], v) for i, v in enumerate(node))


def _check_patterns(path: list[str | int], node: Mapping[str, Any]) -> None:
    # Conservative: any mapping with a string "pattern" or a mapping "patternProperties" counts,
    # wherever it sits, because a $ref can make any part of the document a schema.
    found: list[tuple[list[str | int], str]] = []
    if isinstance(node.get("pattern"), str):
        found.append(([*path, "pattern"], node["pattern"]))
    if isinstance(node.get("patternProperties"), Mapping):
        found += [([*path, "patternProperties", str(p)], str(p)) for p in node["patternProperties"]]
    for where, pattern in found:
        try:
            compile_pattern(pattern)
        except SchemaInvalid as exc:
            raise SchemaInvalid(f"{exc.message} (at {_where(where)})", path=_where(where)) from None


def _check_reference(path: list[str | int], node: Mapping[str, Any]) -> None:
    for keyword in ("$ref", "$dynamicRef"):
        ref = node.get(keyword)
        if isinstance(ref, str) and not ref.startswith("#"):
            where = _where([*path, keyword])
            raise SchemaInvalid(f"{keyword} {_short(ref)} at {where} points outside this schema; only references "
                                "within the same schema ('#/$defs/...') are allowed", path=where)


def check_schema(schema: Any) -> None:
    """Raise SchemaInvalid unless ``schema`` is a valid Draft 2020-12 schema that runs in bounded, linear time.

    Refuses: invalid Draft 2020-12 (with the path of the offending keyword), another ``$schema``
    dialect, a ``pattern``/``patternProperties`` key RE2 cannot run, a ``$ref`` outside the
    document, ``unevaluatedProperties`` combined with ``patternProperties``, more than
    :data:`MAX_SCHEMA_NODES` values or nesting deeper than :data:`MAX_SCHEMA_DEPTH`.
    """
    if not isinstance(schema, Mapping | bool):
        raise SchemaInvalid(f"a JSON Schema is an object or a boolean, got {type(schema).__name__}")
    keywords: set[str] = set()
    for path, node in _walk(schema):
        keywords.update(k for k in node if k in ("unevaluatedProperties", "patternProperties"))
        _check_patterns(path, node)
        _check_reference(path, node)
    if isinstance(schema, Mapping):
        dialect = schema.get("$schema")
        if dialect is not None and dialect not in _SUPPORTED_DIALECTS:
            raise SchemaInvalid(f"$schema {_short(dialect)} is not supported; use Draft 2020-12 "
                                "(https://json-schema.org/draft/2020-12/schema) or leave $schema out",
                                path="$schema")
    if keywords == {"unevaluatedProperties", "patternProperties"}:
        raise SchemaInvalid("unevaluatedProperties cannot be combined with patternProperties in one schema "
                            "(use additionalProperties instead)", path="unevaluatedProperties")
    try:
        _Base.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise SchemaInvalid(f"invalid JSON Schema{f' at {where}' if where else ''}: {exc.message[:_MESSAGE_CHARS]}",
                            path=where) from None
    except RecursionError:
        raise SchemaInvalid("the schema is nested too deeply") from None


# ---------------------------------------------------------------------------------------------
# Validating


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason an instance does not match: ``path`` into the instance, a readable ``message``."""

    path: tuple[str | int, ...]
    message: str
    keyword: str = ""

    @property
    def json_path(self) -> str:
        """The path as ``$.a[0].b``."""
        return json_path(self.path)


def json_path(path: Iterable[Any]) -> str:
    """``$`` followed by ``.name`` / ``[index]`` for each part of ``path``."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


class CompiledSchema:
    """A checked schema compiled once: RE2 patterns, an offline registry, a bounded amount of work.

    :meth:`is_valid` first asks a compiled validator (jsonschema-rs, about 0.2 us instead of 20 us for a
    small object) when the schema uses only keywords both agree on; its "invalid", or any value it cannot
    take (a Decimal, an integer beyond 64 bits, NaN), goes to the reference validator, whose answer and
    errors count. So the fast path can only ever confirm what the reference would also accept.
    """

    __slots__ = ("_fast", "_validator", "schema")

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        self.schema = schema
        self._validator = _SafeValidator(schema, registry=_OFFLINE)
        self._fast = fast_validator(schema)

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        """Every error of ``instance`` (library ``ValidationError`` objects), within the work budget.

        Over budget, or on a reference that cannot be resolved, the last error says so.
        """
        saved = getattr(_budget, "left", None)
        _budget.left = _budget_for(_count_values(instance))
        try:
            yield from self._validator.iter_errors(instance)
        except _OverBudget:
            yield ValidationError("validation stopped: the schema needs too much work for this value "
                                  "(reference cycles or nested anyOf/oneOf fan-out)", validator="budget")
        except RecursionError:
            yield ValidationError("validation stopped: the schema or the value is nested too deeply",
                                  validator="budget")
        except referencing.exceptions.Unresolvable as exc:  # the library's wrapper subclasses it
            yield ValidationError(f"the schema has a $ref that cannot be resolved ({_short(str(exc), 120)})",
                                  validator="$ref")
        except SchemaInvalid as exc:  # a pattern RE2 refuses, reached although check_schema passed it
            yield ValidationError(exc.message, validator="pattern")
        finally:
            if saved is None:
                del _budget.left  # outside any validation again: keywords called directly find no budget
            else:
                _budget.left = saved  # a validation nested in another continues with the outer budget

    def best_violation(self, instance: Any) -> Violation | None:
        """The most relevant violation (the library's ``best_match`` heuristic), or None when valid."""
        if self._confirmed_valid(instance):  # the compiled check when it applies
            return None
        error = best_match(self.iter_errors(instance))
        if error is None:
            return None
        return Violation(path=tuple(error.absolute_path), message=error.message[:_MESSAGE_CHARS],
                         keyword=str(error.validator))

    def is_valid(self, instance: Any) -> bool:
        """Whether ``instance`` matches (stops at the first error)."""
        return self._confirmed_valid(instance) or next(self.iter_errors(instance), None) is None

    def _confirmed_valid(self, instance: Any) -> bool:
        """True when the compiled check may answer and finds ``instance`` valid; False says nothing."""
        if self._fast is None or not self._fast.within(plain_values(instance, MAX_FAST_DEPTH), _budget_for):
            return False
        try:
            return self._fast.is_valid(instance)
        except Exception:  # a value it cannot convert: the reference validator decides
            return False


_compiled_lock = threading.Lock()
_compiled: OrderedDict[str, CompiledSchema] = OrderedDict()
_by_identity: OrderedDict[int, tuple[Any, CompiledSchema]] = OrderedDict()
_COMPILED_CACHE = 512


def _canonical(schema: Any) -> str:
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SchemaInvalid(f"a JSON Schema must be plain JSON: {exc}") from None


def validator_for(schema: Mapping[str, Any] | bool) -> CompiledSchema:
    """The compiled validator of ``schema``, checked with :func:`check_schema` on first use.

    Cached (LRU) by the schema's canonical JSON, with a fast path for the very same object (a
    spec's schema dict is reused for every step of every run). Raises SchemaInvalid.
    """
    key = id(schema)
    hit = _by_identity.get(key)  # without the lock: a dict read is atomic, and this runs for every step
    if hit is not None and hit[0] is schema:
        return hit[1]  # the order stays that of first use: evicting a hot schema only costs a recompile
    text = _canonical(schema)
    with _compiled_lock:
        compiled = _compiled.get(text)
        if compiled is not None:
            _compiled.move_to_end(text)
    if compiled is None:
        check_schema(schema)
        compiled = CompiledSchema(json.loads(text))
        with _compiled_lock:
            _compiled[text] = compiled
            while len(_compiled) > _COMPILED_CACHE:
                _compiled.popitem(last=False)
    with _compiled_lock:
        _by_identity[key] = (schema, compiled)  # holding the object keeps its id from being reused
        while len(_by_identity) > _COMPILED_CACHE:
            _by_identity.popitem(last=False)
    return compiled


def best_violation(schema: Mapping[str, Any] | bool, instance: Any) -> Violation | None:
    """Validate ``instance`` against ``schema``: the best violation with its path, or None when it matches."""
    return validator_for(schema).best_violation(instance)
