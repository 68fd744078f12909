"""CEL rules: compiled once, bounded at upload, evaluated to a strict bool.

CEL evaluation (common-expression-language) holds the GIL, has no cost limit and cannot be
interrupted, so a rule is bounded *before* it is accepted: at most `MAX_RULE_CHARS` characters,
bracket nesting at most `MAX_NESTING`, at most `MAX_COMPREHENSIONS` comprehension macros.
`cel` is imported lazily because importing it costs about 0.6 s.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

from runner.errors import RuleError

__all__ = [
    "MAX_COMPREHENSIONS",
    "MAX_NESTING",
    "MAX_RULE_CHARS",
    "CompiledRule",
    "check_rule_bounds",
    "check_rule_syntax",
    "compile_rule",
]

MAX_RULE_CHARS = 1000
MAX_NESTING = 12
MAX_COMPREHENSIONS = 2
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CEL_LOCATION_RE = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_OPENERS = "([{"
_CLOSERS = ")]}"


def _skip_string(src: str, i: int) -> int:
    """Return the index just past the string literal starting at src[i] (a quote)."""
    raw = (i > 0 and src[i - 1] in "rR") or (i > 1 and src[i - 2] in "rR" and src[i - 1] in "bB")
    quote = src[i] * 3 if src.startswith(src[i] * 3, i) else src[i]
    j = i + len(quote)
    while j < len(src):
        if not raw and src[j] == "\\":
            j += 2
            continue
        if src.startswith(quote, j):
            return j + len(quote)
        j += 1
    return len(src)  # unterminated: cel.compile reports it with a location


def _check_bounds(src: str) -> None:
    """Raise RuleError if `src` exceeds the size, nesting or comprehension bounds."""
    if len(src) > MAX_RULE_CHARS:
        raise RuleError(f"rule is {len(src)} characters long; at most {MAX_RULE_CHARS} are allowed")
    depth = max_depth = macros = 0
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch in "'\"":
            i = _skip_string(src, i)
            continue
        if ch in _OPENERS:
            depth += 1
            max_depth = max(max_depth, depth)
        elif ch in _CLOSERS:
            depth -= 1
        elif ch == "_" or ch.isalpha():
            m = _IDENT_RE.match(src, i)
            assert m is not None
            name, i = m.group(), m.end()
            if name in _MACROS and src[i:].lstrip().startswith("("):
                macros += 1
            continue
        i += 1
    if max_depth > MAX_NESTING:
        raise RuleError(f"rule nests brackets {max_depth} deep; at most {MAX_NESTING} levels are allowed")
    if macros > MAX_COMPREHENSIONS:
        raise RuleError(
            f"rule uses {macros} comprehension macros (all/exists/exists_one/map/filter); "
            f"at most {MAX_COMPREHENSIONS} are allowed"
        )


def _describe_cel_error(exc: Exception) -> str:
    """Turn cel's multi-line parse error into one line that starts with line:column."""
    text = str(exc)
    m = _CEL_LOCATION_RE.search(text)
    if m is None:
        return f"invalid CEL: {text.splitlines()[0] if text else type(exc).__name__}"
    line, column, detail = m.groups()
    return f"invalid CEL at {line}:{column}: {detail.strip()}"


class CompiledRule:
    """A CEL rule compiled once; `evaluate` returns its bool verdict for one piece of data."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        self._program = program

    def __repr__(self) -> str:
        return f"CompiledRule({self.source!r})"

    def evaluate(self, data: Mapping[str, Any]) -> bool:
        """Evaluate the rule over `data` (keys: input, item, steps, output, step).

        Raises RuleError when evaluation fails (missing key, type mismatch, undefined name)
        or when the result is not a bool.
        """
        try:
            result = self._program.execute(_to_cel(data))
        except Exception as exc:  # cel raises KeyError/TypeError/RuntimeError/ValueError/...
            raise RuleError(f"rule {self.source!r} failed: {type(exc).__name__}: {exc}") from exc
        if type(result) is not bool:
            raise RuleError(f"rule {self.source!r} returned {type(result).__name__}, not bool")
        return result


@lru_cache(maxsize=2048)
def compile_rule(src: str) -> CompiledRule:
    """Compile a CEL rule after checking its bounds; cached by source text.

    Raises RuleError with a "line:column" message for syntax errors, or naming the bound exceeded.
    """
    if not isinstance(src, str) or not src.strip():
        raise RuleError("rule is empty")
    _check_bounds(src)
    import cel

    try:
        program = cel.compile(src)
    except Exception as exc:
        raise RuleError(_describe_cel_error(exc)) from exc
    return CompiledRule(src, program)


def check_rule_bounds(src: str) -> str | None:
    """Return None if `src` is within the size, nesting and comprehension bounds, else why not."""
    try:
        _check_bounds(src)
    except RuleError as exc:
        return str(exc)
    return None


def check_rule_syntax(src: str) -> str | None:
    """Return None if `src` compiles within bounds, else the error message."""
    try:
        compile_rule(src)
    except RuleError as exc:
        return str(exc)
    return None


def _to_cel(value: Any) -> Any:
    """Convert data into values cel accepts, copying only containers that need a change.

    Decimal becomes int when integral else float; tuples and sets become lists; dates (not
    datetimes, which cel maps to timestamps) become ISO strings. Anything else unknown is left
    for cel to reject loudly.
    """
    if isinstance(value, Decimal):
        integral = value.is_finite() and value == value.to_integral_value()
        return int(value) if integral else float(value)
    if isinstance(value, Mapping):
        converted = {k: _to_cel(v) for k, v in value.items()}
        unchanged = isinstance(value, dict) and all(converted[k] is value[k] for k in value)
        return value if unchanged else converted
    if isinstance(value, list | tuple | set | frozenset):
        items = [_to_cel(v) for v in value]
        if isinstance(value, set | frozenset):
            return sorted(items)
        unchanged = isinstance(value, list) and all(a is b for a, b in zip(items, value, strict=True))
        return value if unchanged else items
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    return value
