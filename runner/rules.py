"""CEL rules: compiled once, bounded at upload, costed against the data before they run, evaluated to a bool.

CEL evaluation (common-expression-language) holds the GIL, has no cost limit and cannot be
interrupted, so a rule is bounded twice.

**At upload, by its text:** at most `MAX_RULE_CHARS` characters, bracket nesting at most
`MAX_NESTING`, at most `MAX_COMPREHENSIONS` comprehension macros (all/exists/exists_one/existsOne/map/filter).

**Before every evaluation, by the data it will see.** A short text can still do a lot of work:
``output.xs.all(a, output.xs.all(b, a + b >= 0))`` over 6,000 elements is 36 million steps, and
stalled every tenant's requests. So :meth:`CompiledRule.evaluate` first estimates how many values
the rule may visit and refuses (RuleError, which the engine reports as a ``validation`` failure of
the item, or an escalation for an approval ``when``) a rule above `MAX_RULE_VISITS`, or whose data
holds a list or map longer than `MAX_COLLECTION`. The estimate is an upper bound, built from the
rule's text structure and the sizes of the data it references:

- the *weight* of a value is 1 per scalar and per container plus 1 per 64 characters of a string
  (string functions, concatenation and comparison are linear in the string's length);
- each comprehension's *range* (the receiver of ``.all(...)`` etc.) is resolved against the data
  when it is a plain path (``output.xs``): it iterates that collection's length ``n`` and binds
  elements of at most that collection's largest element weight ``e``. An iteration variable
  (``row`` in ``output.rows.all(row, row.all(...))``) is bounded by the largest collection and
  element anywhere in the referenced data; any other expression (``xs.map(...).all(...)``,
  ``xs + ys``) by the total weight of the referenced data, for both;
- a comprehension nested inside others runs once per combination of the enclosing iterations,
  so it costs the product of their ``n`` times its own (``n^depth`` for the same list);
- every operator or function call inside a comprehension body costs, per iteration, the largest
  weight it can be handed: the enclosing ranges' element weights, and the weight of every data path
  the body mentions (``output`` in ``xs.all(x, x == output)`` costs the whole output each time);
  ``in`` costs the length of its right-hand list (a literal list: its element count);
- outside comprehensions each operator costs the weight of the largest path the rule mentions,
  and converting what the rule is handed costs its total weight once.

Only ``&&``, ``||``, ``!``, ``?:`` and indexing are counted as free. The bound is loose for
rules that compare scalars (a 100,000-element ``all`` is fine, a nested pair over 316 elements
is the most that fits) and never lower than the real work, which is the point.

**Only what a rule reads is handed to cel** (:func:`_needs`): cel converts every value it is given,
about 1.5 us per string or container, so ``output.n > 0`` gets ``{"n": ...}`` and ``size(steps)``
a list of as many nulls as there are steps, not every earlier output. The collection bound and the
weights above apply to those views. :class:`RuleInput` builds each view lazily, once, and keeps its
size statistics, so the rules of one step share the work (build one per step and pass it to every
rule; passing a plain mapping still works). A rule without comprehensions whose views are small
(:meth:`CompiledRule._surely_small`, one ``json.dumps``) skips the detailed estimate: it cannot
exceed the bounds.
`cel` is imported lazily because importing it costs about 0.6 s.

Why over 500 lines: the bounds checked at upload and the cost estimate at evaluation walk the same
CEL syntax; kept together so a new construct is bounded in both places at once.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from runner.errors import RuleError
from runner.rule_subset import MISSING, ROOTS, Predicate, Stopped, compile_subset, walk

__all__ = [
    "MAX_COLLECTION",
    "MAX_COMPREHENSIONS",
    "MAX_NESTING",
    "MAX_RULE_CHARS",
    "MAX_RULE_VISITS",
    "ROOTS",
    "CompiledRule",
    "RuleInput",
    "RuleSet",
    "StepOutputs",
    "check_rule_bounds",
    "check_rule_syntax",
    "compile_rule",
    "rule_set",
]

MAX_RULE_CHARS = 1000
MAX_NESTING = 12
MAX_COMPREHENSIONS = 2
MAX_RULE_VISITS = 300_000  # values one evaluation may visit (the estimate's upper bound)
MAX_COLLECTION = 100_000  # elements of any single list or map a rule may see
_MACROS = frozenset({"all", "exists", "exists_one", "existsOne", "map", "filter"})
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


def _scan(src: str, visit: Callable[[int, str], int]) -> None:
    """Walk ``src`` outside string literals: ``visit(i, ch)`` at each position returns where to go on."""
    i, n = 0, len(src)
    while i < n:
        i = _skip_string(src, i) if src[i] in "'\"" else visit(i, src[i])


def _blanked(src: str) -> str:
    """``src`` with every comment and the inside of every string literal turned into spaces (same length).

    What the scanners look for (paths, calls, comprehensions, brackets) then cannot hide in a comment (a
    quote in ``// don't`` would open a "string" running to the end) or appear from one (``// size(``).
    A character outside ASCII cannot be part of CEL syntax outside strings and comments: blanked too.
    """
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch in "'\"":
            end = _skip_string(src, i)
            quote = 3 if src.startswith(ch * 3, i) else 1
            for k in range(i + quote, max(i + quote, end - quote)):
                out[k] = " "
            i = end
        elif src.startswith("//", i):
            end = src.find("\n", i)
            end = n if end < 0 else end
            for k in range(i, end):
                out[k] = " "
            i = end
        else:
            if not ch.isascii():
                out[i] = " "
            i += 1
    return "".join(out)


_AROUND_DOT_RE = re.compile(r"\s*\.\s*")


def _skeleton(blanked: str) -> str:
    """What the scanners read: a :func:`_blanked` rule with the spaces CEL allows around a ``.`` removed
    (``output . xs .\n all(...)`` is ``output.xs.all(...)``)."""
    return _AROUND_DOT_RE.sub(".", blanked)


_MATCHES_RE = re.compile(r"(?<![\w])matches\s*\(")
_REPEAT_RE = re.compile(r"\{(\d*)(?:,(\d*))?\}")
MAX_MATCHES = 4  # matches() calls per rule
MAX_PATTERN_REPEAT = 32  # sum over a rule's patterns of the product of their counted repetitions


def _check_patterns(src: str, blanked: str) -> None:
    """Bound a rule's regular expressions: cel compiles each ``matches`` pattern on every evaluation, and the
    cost grows with counted repetition of large classes (``'x'.matches('\\w{200}')`` takes 70 ms; 36 of
    them 2.4 s). A pattern must be a string literal; a rule has at most `MAX_MATCHES` of them, and their
    counted repetitions (``{n}``, ``{n,m}``: the product of the bounds within a pattern) add up to at most
    `MAX_PATTERN_REPEAT`.
    """
    calls = list(_MATCHES_RE.finditer(blanked))
    if len(calls) > MAX_MATCHES:
        raise RuleError(f"rule calls matches() {len(calls)} times; at most {MAX_MATCHES} are allowed")
    total = 0
    for call in calls:
        opens = call.end() - 1
        closes = _matching(blanked, opens)
        args = _split_arguments(blanked, opens + 1, closes)
        start, end = args[-1] if args else (closes, closes)
        arg = blanked[start:end]
        at = start + len(arg) - len(arg.lstrip())
        at += blanked[at] in "rR" if at < end else 0
        if at >= end or blanked[at] not in "'\"" or blanked[_skip_string(blanked, at):end].strip():
            raise RuleError("matches() takes its pattern as one string literal in a rule")
        literal = src[at:end]
        bounds = [max(int(m.group(1) or 0), int(m.group(2) or 0), 1) for m in _REPEAT_RE.finditer(literal)]
        total += math.prod(bounds) if bounds else 0
    if total > MAX_PATTERN_REPEAT:
        raise RuleError(f"rule's matches() patterns repeat {total} times in all ({{n}} and {{n,m}}, multiplied "
                        f"within a pattern); at most {MAX_PATTERN_REPEAT} are allowed")


def _split_arguments(blanked: str, start: int, end: int) -> list[tuple[int, int]]:
    """The (start, end) spans of the top-level, comma-separated arguments in ``blanked[start:end]``."""
    spans, depth, begin = [], 0, start
    for i in range(start, end):
        ch = blanked[i]
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif ch == "," and depth == 0:
            spans.append((begin, i))
            begin = i + 1
    if blanked[begin:end].strip():
        spans.append((begin, end))
    return spans


def _check_bounds(src: str) -> None:
    """Raise RuleError if `src` exceeds the size, nesting, comprehension or pattern bounds."""
    if len(src) > MAX_RULE_CHARS:
        raise RuleError(f"rule is {len(src)} characters long; at most {MAX_RULE_CHARS} are allowed")
    blanked = _blanked(src)
    _check_patterns(src, blanked)
    src = _skeleton(blanked)
    depth = max_depth = macros = 0

    def visit(i: int, ch: str) -> int:
        nonlocal depth, max_depth, macros
        if ch in _OPENERS:
            depth += 1
            max_depth = max(max_depth, depth)
        elif ch in _CLOSERS:
            depth -= 1
        elif ch == "_" or ch.isalpha():
            m = _IDENT_RE.match(src, i)
            assert m is not None
            if m.group() in _MACROS and src[m.end():].lstrip().startswith("("):
                macros += 1
            return m.end()
        return i + 1

    _scan(src, visit)
    if max_depth > MAX_NESTING:
        raise RuleError(f"rule nests brackets {max_depth} deep; at most {MAX_NESTING} levels are allowed")
    if macros > MAX_COMPREHENSIONS:
        raise RuleError(
            f"rule uses {macros} comprehension macros (all/exists/exists_one/existsOne/map/filter); "
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


_OPERATOR_RE = re.compile(r"==|!=|<=|>=|<|>|\+|-|\*|/|%")
_PATH_RE = re.compile(r"(?<![\w.])(input|item|steps|output|step)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
_STRING_CHARS_PER_VALUE = 64


@dataclass(frozen=True, slots=True)
class _Macro:
    """A comprehension site: its receiver text and the span of its argument list."""

    range_text: str
    opens: int  # index of its "("
    closes: int  # index of its matching ")"


@dataclass(frozen=True, slots=True)
class _Site:
    """An operator or function call that may cost as much as its operands' weight."""

    at: int
    membership_of: str | None = None  # for "in": the right-hand operand's text


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the cost estimate needs from a rule's text (see the module docstring)."""

    macros: tuple[_Macro, ...]
    sites: tuple[_Site, ...]
    paths: tuple[tuple[int, tuple[str, ...]], ...]  # (position, root path) for every data path mentioned


def _receiver(src: str, dot: int) -> str:
    """The receiver expression ending just before ``src[dot]`` (a "." before a macro name)."""
    i, depth = dot - 1, 0
    while i >= 0:
        ch = src[i]
        if ch in _CLOSERS:
            depth += 1
        elif ch in _OPENERS:
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and not (ch.isalnum() or ch in "_."):
            break
        i -= 1
    return src[i + 1:dot].strip()


def _matching(src: str, opens: int) -> int:
    depth, i = 0, opens
    while i < len(src):
        ch = src[i]
        if ch in "'\"":
            i = _skip_string(src, i)
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(src)


def _operand_after(src: str, i: int) -> str:
    """The operand text starting at ``src[i]`` (a path, or a bracketed literal)."""
    while i < len(src) and src[i] == " ":
        i += 1
    if i < len(src) and src[i] in _OPENERS:
        return src[i:_matching(src, i) + 1]
    m = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*").match(src, i)
    return m.group() if m else ""


def _shape(src: str) -> _Shape:
    """Scan the rule (outside string literals) for comprehensions, costed operators and data paths."""
    macros: list[_Macro] = []
    sites: list[_Site] = []
    paths: list[tuple[int, tuple[str, ...]]] = []

    def visit(i: int, ch: str) -> int:
        if ch == "_" or ch.isalpha():
            m = _IDENT_RE.match(src, i)
            assert m is not None
            name, end = m.group(), m.end()
            path = _PATH_RE.match(src, i)
            if path is not None and (i == 0 or src[i - 1] != "."):
                paths.append((i, (path.group(1), *[p for p in path.group(2).split(".") if p])))
            after = src[end:].lstrip()
            if name in _MACROS and after.startswith("(") and i > 0 and src[i - 1] == ".":
                opens = src.index("(", end)
                macros.append(_Macro(_receiver(src, i - 1), opens, _matching(src, opens)))
            elif name == "in" and not after.startswith("("):
                sites.append(_Site(i, membership_of=_operand_after(src, end)))
            elif after.startswith("(") and name not in _MACROS:
                sites.append(_Site(i))  # a function or method call
            return end
        op = _OPERATOR_RE.match(src, i)
        if op is not None:
            sites.append(_Site(i))
            return op.end()
        return i + 1

    _scan(src, visit)
    return _Shape(tuple(macros), tuple(sites), tuple(paths))


# ---------------------------------------------------------------------------------------------
# What a rule sees


@dataclass(frozen=True, slots=True)
class _Stats:
    """Sizes of one value: total weight, longest list/map, heaviest element of any list/map inside."""

    weight: int
    longest: int
    heaviest_element: int


_PLAIN = frozenset({int, float, bool, type(None)})  # weight 1, nothing to convert
_TEXT = frozenset({str, bytes})
_CONTAINERS = (Mapping, list, tuple, set, frozenset)


def _stats(value: Any) -> _Stats:
    """Sizes of ``value`` (iterative post-order walk: deep data cannot exhaust the stack).

    Exact types are dispatched first: ``isinstance`` against the ``Mapping`` ABC is the slow part
    of this walk, and rule data is almost always plain JSON (dict, list, str, int, float, bool, None).
    """
    kind = type(value)
    if kind in _PLAIN:
        return _ONE
    if not _is_container(value):
        return _Stats(_scalar_weight(value), 0, 0)
    weights: dict[int, int] = {}
    longest = heaviest = 0
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, done = stack.pop()
        children = list(node.values()) if isinstance(node, Mapping) else list(node)
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if _is_container(c))
            continue
        longest = max(longest, len(children))
        child_weights = [_weight_of(c, weights) for c in children]
        if child_weights:
            heaviest = max(heaviest, *child_weights)
        weights[id(node)] = 1 + sum(child_weights)
    return _Stats(weights[id(value)], longest, heaviest)


def _weight_of(child: Any, weights: dict[int, int]) -> int:
    """A child's weight: a container's from ``weights`` (the walk computed it first), a scalar's own."""
    return weights.get(id(child), 1) if _is_container(child) else _scalar_weight(child)


def _is_container(value: Any) -> bool:
    kind = type(value)
    if kind is dict or kind is list:
        return True
    return kind not in _PLAIN and kind not in _TEXT and isinstance(value, _CONTAINERS)


def _scalar_weight(value: Any) -> int:
    if isinstance(value, str | bytes):
        return 1 + len(value) // _STRING_CHARS_PER_VALUE
    return 1


_ONE = _Stats(1, 0, 0)

_MISSING = MISSING  # one sentinel with runner.rule_subset's walk


class StepOutputs(dict[str, Any]):
    """The ``steps`` root of an item's context: step id -> ``{"output": ...}``, filled as steps end.

    An entry is never changed once set (a step that runs again replaces its entry with a new one), so the
    sizes and the CEL form of each entry are computed once and reused by the rules of every later step:
    without this, each step walked and converted every earlier output again (quadratic in the steps).
    """

    __slots__ = ("_cel", "_stats")

    def __init__(self) -> None:
        super().__init__()
        self._stats: dict[str, tuple[Any, _Stats]] = {}
        self._cel: dict[str, tuple[Any, Any]] = {}

    def stats(self) -> _Stats:
        """The sizes of the whole map, composed from each entry's (what :func:`_stats` of the map gives)."""
        weight, longest, heaviest = 1, len(self), 0
        for key, entry in self.items():
            found = self._stats.get(key)
            if found is None or found[0] is not entry:
                found = self._stats[key] = (entry, _stats(entry))
            part = found[1]
            weight += part.weight
            longest = max(longest, part.longest)
            heaviest = max(heaviest, part.weight, part.heaviest_element)
        return _Stats(weight, longest, heaviest)

    def cel(self) -> dict[str, Any]:
        """The map as CEL accepts it, each entry converted once."""
        out = {}
        for key, entry in self.items():
            found = self._cel.get(key)
            if found is None or found[0] is not entry:
                found = self._cel[key] = (entry, _to_cel(entry))
            out[key] = found[1]
        return out


class RuleInput:
    """What the rules of one step see, converted lazily and once: only the roots a rule references.

    Build one per step from the context mapping (``{**context, "output": output}``) and pass it to
    every rule of the step; the roots, their CEL form and their sizes are computed on first use and
    shared. Do not mutate the mapping afterwards.
    """

    __slots__ = ("_cel", "_data", "_paths", "_stats", "_view_chars", "_view_stats", "_views")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data
        self._cel: dict[str, Any] = {}
        self._stats: dict[str, _Stats] = {}
        self._paths: dict[tuple[str, ...], _Stats | None] = {}
        self._views: dict[tuple[str, _Need], Any] = {}
        self._view_stats: dict[tuple[str, _Need], _Stats] = {}
        self._view_chars: dict[tuple[str, _Need], int] = {}

    def __contains__(self, root: object) -> bool:
        return root in self._data

    def cel_value(self, root: str) -> Any:
        """``root``'s value as CEL accepts it (converted on first use)."""
        found = self._cel.get(root, _MISSING)
        if found is _MISSING:
            value = self._data[root]
            found = self._cel[root] = value.cel() if isinstance(value, StepOutputs) else _to_cel(value)
        return found

    def view(self, root: str, need: _Need) -> Any:
        """The part of ``root`` a rule reads (see :func:`_needs`), as CEL accepts it; computed once per need."""
        if need is _WHOLE:
            return self.cel_value(root)
        found = self._views.get((root, need), _MISSING)
        if found is _MISSING:
            found = self._views[(root, need)] = _to_cel(_project(self._data[root], need))
        return found

    def view_chars(self, root: str, need: _Need) -> int:
        """The length of what :meth:`view` hands cel, as JSON text (an upper bound of its weight)."""
        found = self._view_chars.get((root, need))
        if found is None:
            try:
                found = len(json.dumps(self.view(root, need), default=repr))
            except (TypeError, ValueError):  # keys JSON cannot spell (bytes...): measured by the estimate
                found = MAX_COLLECTION + 1
            self._view_chars[(root, need)] = found
        return found

    def view_stats(self, root: str, need: _Need) -> _Stats:
        """Sizes of what :meth:`view` hands cel."""
        if need is _WHOLE:
            return self.root_stats(root)
        found = self._view_stats.get((root, need))
        if found is None:
            found = self._view_stats[(root, need)] = _stats(self.view(root, need))
        return found

    def root_stats(self, root: str) -> _Stats:
        """Sizes of ``root``'s value."""
        found = self._stats.get(root)
        if found is None:
            value = self._data[root]
            found = self._stats[root] = value.stats() if isinstance(value, StepOutputs) else _stats(value)
        return found

    def leaf(self, path: tuple[str, ...]) -> Any:
        """The value at a dotted path as CEL accepts it, ``_MISSING`` where a key is missing, or a
        :class:`~runner.rule_subset.Stopped` where the path runs into a value that is not a map."""
        node = walk(self._data, path)
        return node if node is _MISSING or type(node) is Stopped else _to_cel(node)

    def path_stats(self, path: tuple[str, ...]) -> _Stats | None:
        """Sizes of the value at a dotted path (None when the path does not exist: CEL reports that)."""
        if len(path) == 1:
            return self.root_stats(path[0]) if path[0] in self._data else None
        if path not in self._paths:
            node = walk(self._data, path)
            self._paths[path] = None if node is _MISSING or type(node) is Stopped else _stats(node)
        return self._paths[path]


# ---------------------------------------------------------------------------------------------
# What a rule reads: only that is handed to cel


# A need: (whole, size_only, ((field, need), ...)). ``whole``: the value as it is; ``size_only``: only its
# size is read (``size(x)``/``x.size()``); the fields: what is read below it. Hashable, so rules that read
# the same part of a root share one conversion.
_Need = tuple[bool, bool, tuple[tuple[str, Any], ...]]
_WHOLE: _Need = (True, False, ())
_SIZE_CALL_BEFORE = re.compile(r"(?<![\w.])size\s*\(\s*$")
_CALL_AFTER = re.compile(r"\s*\(")
_CLOSE_AFTER = re.compile(r"\s*\)")
_EMPTY_CALL_AFTER = re.compile(r"\s*\(\s*\)")


def _needs(src: str) -> dict[str, _Need]:
    """What part of each root ``src`` reads, from the data paths its text mentions.

    cel converts every value it is handed (about 1.5 us per string and per container), so handing it
    only what a rule reads is most of a rule's cost: ``output.n > 0`` gets ``{"n": ...}``, and
    ``size(steps) <= 50`` gets a list of as many nulls as ``steps`` has entries. A path's fields stop at
    the first method or macro call (``output.xs.all(...)`` reads all of ``xs``); a root mentioned any other
    way (``output``, ``output["n"]``) is read whole. ``src`` is the rule's :func:`_skeleton`: nothing in a
    comment or a string literal counts, and ``output . n`` is ``output.n``. Everything below a
    field that is read is handed over as it is, so a field selection, ``has()``, an index or a
    comprehension sees exactly what it would see in the whole root, and a field that does not exist is
    missing from the view as well. The view's structure differs from the data's only where nothing but
    a size is read.
    """
    trees: dict[str, dict[str, Any]] = {}
    for m in _PATH_RE.finditer(src):
        start, root = m.start(), m.group(1)
        ident = _IDENT_RE.match(src, start)
        if ident is None or ident.group() != root:
            continue  # "stepper"
        fields: list[str] = []
        end = m.start(2)
        size_call = False
        for part in [p for p in m.group(2).split(".") if p]:
            part_end = end + 1 + len(part)
            if _CALL_AFTER.match(src, part_end):  # a method or macro: its receiver is read
                size_call = part == "size" and _EMPTY_CALL_AFTER.match(src, part_end) is not None
                break
            fields.append(part)
            end = part_end
        else:
            size_call = (_SIZE_CALL_BEFORE.search(src, 0, start) is not None
                         and _CLOSE_AFTER.match(src, m.end()) is not None)
        node = trees.setdefault(root, {})
        for part in fields:
            if node.get("whole"):
                break
            node = node.setdefault("fields", {}).setdefault(part, {})
        if size_call:
            node["size"] = True
        else:
            node["whole"] = True
    return {root: _freeze(tree) for root, tree in trees.items()}


def _freeze(tree: dict[str, Any]) -> _Need:
    if tree.get("whole"):
        return _WHOLE
    fields = tree.get("fields", {})
    return (False, bool(tree.get("size")), tuple(sorted((k, _freeze(v)) for k, v in fields.items())))


def _project(value: Any, need: _Need) -> Any:
    """The part of ``value`` that ``need`` reads (see :func:`_needs`)."""
    whole, size_only, fields = need
    if whole:
        return value
    if not fields:  # only its size is read
        return [None] * len(value) if isinstance(value, _CONTAINERS) else value
    if not isinstance(value, Mapping):
        return value  # a field of a list or a scalar: cel reports the error the whole value would give
    out = {key: _project(value[key], sub) for key, sub in fields if key in value}
    if size_only:
        out.update((key, None) for key in value if key not in out)
    return out


# ---------------------------------------------------------------------------------------------
# The estimate


@dataclass(frozen=True, slots=True)
class _Range:
    length: int
    element: int


def _path_of(text: str) -> tuple[str, ...] | None:
    m = _PATH_RE.fullmatch(text)
    return None if m is None else (m.group(1), *[p for p in m.group(2).split(".") if p])


@dataclass(frozen=True, slots=True)
class _Plan:
    """The data-independent part of the estimate, computed once per rule."""

    ranges: tuple[tuple[str, tuple[str, ...] | None], ...]  # per macro: ("path"|"variable"|"expression", path)
    macro_outer: tuple[tuple[int, ...], ...]  # per macro: the macros enclosing it
    sites: tuple[tuple[tuple[int, ...], str, Any, tuple[tuple[str, ...], ...]], ...]
    # per site: (enclosing macros, kind "in_literal"|"in_path"|"in_other"|"op", literal size or path,
    #            the data paths its weight depends on)
    flat_sites: int  # without comprehensions: how many sites; -1 with any
    literal: int  # the elements of literal lists on the right of "in"


def _plan(shape: _Shape) -> _Plan:
    def enclosing(at: int) -> tuple[int, ...]:
        return tuple(k for k, m in enumerate(shape.macros) if m.opens < at < m.closes)

    ranges: list[tuple[str, tuple[str, ...] | None]] = []
    for macro in shape.macros:
        path = _path_of(macro.range_text)
        kind = "path" if path is not None else "variable" if _IDENT_RE.fullmatch(macro.range_text) else "expression"
        ranges.append((kind, path))
    sites: list[tuple[tuple[int, ...], str, Any, tuple[tuple[str, ...], ...]]] = []
    for site in shape.sites:
        around = enclosing(site.at)
        operand = site.membership_of
        if operand is not None:
            if operand.startswith("["):
                sites.append((around, "in_literal", operand.count(",") + 1, ()))
            elif (path := _path_of(operand)) is not None:
                sites.append((around, "in_path", path, ()))
            else:
                sites.append((around, "in_other", None, ()))
            continue
        if around:
            inner = shape.macros[around[-1]]
            mentioned = tuple(p for pos, p in shape.paths if inner.opens < pos < inner.closes)
        else:
            mentioned = tuple(p for _, p in shape.paths)
        sites.append((around, "op", None, mentioned))
    return _Plan(tuple(ranges), tuple(enclosing(m.opens) for m in shape.macros), tuple(sites),
                 -1 if shape.macros else len(sites), sum(d for _, kind, d, _ in sites if kind == "in_literal"))


def _views_size(needs: tuple[tuple[str, _Need], ...], data: RuleInput) -> tuple[int, int, int]:
    """(total weight, longest list or map, heaviest element) of what the rule is handed."""
    total = longest = heaviest = 0
    for root, need in needs:
        if root in data:
            found = data.view_stats(root, need)
            total += found.weight
            longest = max(longest, found.longest)
            heaviest = max(heaviest, found.heaviest_element)
    return total, longest, heaviest


def _estimate(plan: _Plan, needs: tuple[tuple[str, _Need], ...], data: RuleInput) -> tuple[int, int]:
    """(upper bound of values visited, longest list or map seen) for one evaluation."""
    total, longest, heaviest = _views_size(needs, data)

    ranges: list[_Range] = []
    for kind, path in plan.ranges:
        if kind == "path":
            assert path is not None
            found = data.path_stats(path)
            ranges.append(_Range(found.longest, found.heaviest_element) if found is not None else _Range(0, 0))
        elif kind == "variable":
            ranges.append(_Range(longest, heaviest))  # an iteration variable: the largest collection anywhere
        else:
            ranges.append(_Range(total, total))  # an expression: everything the rule references

    visits = total  # converting the referenced data
    for k, outer in enumerate(plan.macro_outer):
        visits += math.prod(ranges[j].length for j in outer) * max(1, ranges[k].length)
    for around, kind, detail, mentioned in plan.sites:
        repeats = math.prod(ranges[j].length for j in around)
        if kind == "in_literal":
            cost = detail
        elif kind == "in_path":
            found = data.path_stats(detail)
            cost = found.longest if found is not None else 1
        elif kind == "in_other":
            cost = longest
        else:
            weights = [ranges[j].element for j in around]
            for path in mentioned:
                found = data.path_stats(path)
                weights.append(found.weight if found is not None else 1)
            cost = max(weights, default=1)
        visits += repeats * max(1, cost)
    return visits, longest


class CompiledRule:
    """A CEL rule compiled once; `evaluate` returns its bool verdict for one piece of data."""

    __slots__ = ("_needs", "_plan", "_program", "roots", "source")

    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        self._program = program
        variables = set(program.variables()) if hasattr(program, "variables") else set(ROOTS)
        self.roots: tuple[str, ...] = tuple(sorted(variables & ROOTS))  # the data roots the rule names
        skeleton = _skeleton(_blanked(source))
        self._plan = _plan(_shape(skeleton))
        needs = _needs(skeleton)
        self._needs = tuple((root, needs.get(root, _WHOLE)) for root in self.roots)

    def __repr__(self) -> str:
        return f"CompiledRule({self.source!r})"

    def estimate(self, data: Mapping[str, Any] | RuleInput) -> int:
        """An upper bound of the values this rule visits over ``data`` (see the module docstring)."""
        rule_input = data if isinstance(data, RuleInput) else RuleInput(data)
        return _estimate(self._plan, self._needs, rule_input)[0]

    def _surely_small(self, data: RuleInput) -> bool:
        """True when a rule without comprehensions reads so little that the estimate cannot refuse it.

        Without comprehensions every operator and call runs once, on at most what the rule reads, so the
        rule visits at most (1 + its operators and calls) times the weight of its views, plus its literal
        lists; a view's weight is at most the length of its JSON text (each value takes at least one
        character, a string one per character). Measuring that text is one C call instead of a walk.
        """
        sites = self._plan.flat_sites
        if sites < 0:
            return False
        size = sum(data.view_chars(root, need) for root, need in self._needs if root in data)
        return size <= MAX_COLLECTION and size * (1 + sites) + self._plan.literal <= MAX_RULE_VISITS

    def _check_cost(self, data: RuleInput) -> None:
        visits, longest = _estimate(self._plan, self._needs, data)
        if longest > MAX_COLLECTION:
            raise RuleError(f"rule {self.source!r} not evaluated: the data it references holds a list or map of "
                            f"{longest:,} elements; rules may see at most {MAX_COLLECTION:,}")
        if visits > MAX_RULE_VISITS:
            raise RuleError(f"rule {self.source!r} not evaluated: over this data it could visit about {visits:,} "
                            f"values, more than the {MAX_RULE_VISITS:,} a rule may (nested comprehensions cost "
                            "the product of their lists' lengths)")

    def evaluate(self, data: Mapping[str, Any] | RuleInput) -> bool:
        """Evaluate the rule over `data` (keys: input, item, steps, output, step), a mapping or a RuleInput.

        Raises RuleError when the data is too large for the rule (see the module docstring),
        when evaluation fails (missing key, type mismatch, undefined name) or when the result is
        not a bool.
        """
        result = self.execute(data if isinstance(data, RuleInput) else RuleInput(data))
        if type(result) is not bool:
            raise RuleError(f"rule {self.source!r} returned {type(result).__name__}, not bool")
        return result

    def execute(self, rule_input: RuleInput) -> Any:
        """The expression's value over ``rule_input``, within the bounds (RuleError otherwise)."""
        try:
            if not self._surely_small(rule_input):
                self._check_cost(rule_input)
        except RecursionError as exc:
            raise RuleError(f"rule {self.source!r} not evaluated: the data it reads is nested too deeply") from exc
        try:
            return self._program.execute({root: rule_input.view(root, need) for root, need in self._needs
                                          if root in rule_input})
        except Exception as exc:  # cel raises KeyError/TypeError/RuntimeError/ValueError/...
            raise RuleError(f"rule {self.source!r} failed: {type(exc).__name__}: {exc}") from exc


_MAX_COMBINED_CHARS = 20 * MAX_RULE_CHARS  # a step's rules at their longest (20 of at most 1,000 characters)


class RuleSet:
    """The rules of one place (a step's ``rules``, an agent's approval ``when``s), also compiled as one list
    expression ``[r1, r2, ...]`` so the common case costs one cel call instead of one per rule.

    The list is bounded and costed like any rule (its estimate is the sum of its parts'), but it answers
    only the question with an obvious answer: "does every rule hold?" (:meth:`all_true`) or "which one is the
    first to hold?" (:meth:`first_true`). Anything else (a rule that is false, not a bool or fails, data over
    the bounds, a rule that does not compile) returns None, and the caller evaluates the rules one by one, as
    before, for the exact verdicts and errors. Rules have no side effects, so evaluating one twice is safe.
    """

    __slots__ = ("_combined", "_flat", "_subset", "sources")

    def __init__(self, sources: tuple[str, ...]) -> None:
        self.sources = sources
        self._combined: CompiledRule | None = None
        self._flat: _Flattened | None = None
        self._subset: tuple[Predicate, ...] | None = None
        try:
            compiled = [compile_rule(src) for src in sources]  # each within its bounds, each compiles
            # Paths compared with literals: no cel call at all, within the size each rule's bounds allow.
            subset = [compile_subset(src, _surely_small_chars(rule._plan)) for src, rule in zip(
                sources, compiled, strict=True)]
            self._subset = tuple(p for p in subset if p is not None) if all(subset) else None
            if sum(map(len, sources)) > _MAX_COMBINED_CHARS:
                return  # the combined program is for a step's rules; a longer list goes one by one
            import cel

            combined = "[" + ",".join(f"(\n{src}\n)" for src in sources) + "]"  # a // comment ends at its line
            self._combined = CompiledRule(combined, cel.compile(combined))
            if all(set(rule._program.variables()) <= ROOTS for rule in compiled):  # no other name to shadow
                self._flat = _flatten(combined, self._combined)
        except Exception:  # noqa: S110 - no shortcut: the caller evaluates rule by rule, reporting errors
            pass

    def _results(self, data: RuleInput) -> list[Any] | None:
        if self._combined is None:
            return None
        try:
            result = self._flat.execute(data) if self._flat is not None else self._combined.execute(data)
        except RuleError:
            return None
        return result if type(result) is list and len(result) == len(self.sources) else None

    def all_true(self, data: RuleInput) -> bool | None:
        """True when every rule holds; None when the rules must be evaluated one by one to say more."""
        if self._subset is not None:
            for rule in self._subset:
                if rule(data._data) is not True:
                    break
            else:
                return True
        results = self._results(data)
        return True if results is not None and all(r is True for r in results) else None

    def first_true(self, data: RuleInput) -> int | None:
        """The index of the first rule that holds, ``-1`` when none does; None when the rules must be evaluated
        one by one (one of them is not a bool, or fails)."""
        if self._subset is not None:
            for i, rule in enumerate(self._subset):
                verdict = rule(data._data)
                if verdict is None:
                    break  # cel knows
                if verdict:
                    return i
            else:
                return -1
        results = self._results(data)
        if results is None or any(type(r) is not bool for r in results):
            return None
        return next((i for i, r in enumerate(results) if r), -1)


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


# A chain of names joined by dots (spaces and blanked comments around a dot allowed, as CEL allows them).
_CHAIN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*")
_DOT_RE = re.compile(r"\s*\.\s*")
_CALL_RE = re.compile(r"\s*\(")
_FLAT_VAR = "_mw_v{}"


class _Flattened:
    """A rule set without comprehensions whose data paths are passed as variables of their own.

    cel builds a map for every mapping it is handed, about 2.7 us each, while a scalar costs 0.25 us:
    ``output.n >= 0 && step.args.n < 5`` as ``_mw_v0 >= 0 && _mw_v1 < 5``, with the two values looked up in
    Python, costs a fraction. A path that does not resolve (a missing key, a field of a list) leaves its
    variable unbound, so cel fails and the caller evaluates the original rules one by one, which report
    exactly what the data lacks. Only for rules without comprehensions (no variable can shadow a root)
    that name no variable but the roots. A root named on its own (``size(steps)``) is passed as its view.
    """

    __slots__ = ("_bindings", "_bounds", "_program", "_roots")

    def __init__(self, program: Any, bindings: tuple[tuple[str, tuple[str, ...]], ...],
                 roots: tuple[tuple[str, _Need], ...], bounds: CompiledRule) -> None:
        self._program = program
        self._bindings = bindings
        self._roots = roots
        self._bounds = bounds  # the combined rule: its estimate is at least each rule's

    def execute(self, data: RuleInput) -> Any:
        """The list of the rules' values, or RuleError (unbound path, over the bounds, cel's error)."""
        if not self._bounds._surely_small(data):  # exactly the bounds the rules one by one would apply
            self._bounds._check_cost(data)
        values: dict[str, Any] = {}
        for name, path in self._bindings:
            node = data.leaf(path)
            if type(node) is Stopped:  # cel would be handed that value whole, and might refuse it
                raise RuleError("a path runs through a value that is not a map")
            if node is not _MISSING:  # a missing key leaves the variable unbound, as the field would be missing
                values[name] = node
        for root, need in self._roots:
            if root in data:
                values[root] = data.view(root, need)
        try:
            return self._program.execute(values)
        except Exception as exc:  # an unbound path, a type error...: the rules one by one say which
            raise RuleError(str(exc)) from exc


def _flatten(src: str, bounds: CompiledRule) -> _Flattened | None:
    """``src`` with every ``root.field...`` path replaced by a variable (see :class:`_Flattened`), or None."""
    import cel

    blanked = _blanked(src)
    if bounds._plan.flat_sites < 0 or re.search(r"(?<![\w.])(bind|has)\s*\(", blanked):
        return None  # a comprehension or cel.bind could shadow a root; has() needs a field selection
    pieces: list[str] = []
    names: dict[tuple[str, ...], str] = {}
    at = 0
    for m in _CHAIN_RE.finditer(blanked):
        parts = _DOT_RE.split(m.group())
        back = m.start() - 1
        while back >= 0 and blanked[back].isspace():  # linear in all: only the gap since the previous chain
            back -= 1
        if parts[0] not in ROOTS or (back >= 0 and blanked[back] == "."):
            continue  # not a root, or a field of something else
        end, fields = m.start() + len(parts[0]), []
        for part in parts[1:]:
            part_end = blanked.index(part, end) + len(part)
            if _CALL_RE.match(blanked, part_end):
                break  # a method: its receiver is the value
            fields.append(part)
            end = part_end
        if not fields or _CALL_RE.match(blanked, m.start() + len(parts[0])):
            continue  # the root on its own: passed as its view
        path = (parts[0], *fields)
        name = names.setdefault(path, _FLAT_VAR.format(len(names)))
        pieces += [src[at:m.start()], name]
        at = end
    if not names:
        return None
    flat = "".join(pieces) + src[at:]
    try:
        program = cel.compile(flat)
    except Exception:
        return None
    variables = set(program.variables())
    needs = _needs(_skeleton(_blanked(flat)))
    roots = tuple((root, needs.get(root, _WHOLE)) for root in sorted(variables & ROOTS))
    return _Flattened(program, tuple((name, path) for path, name in names.items()), roots, bounds)


def _surely_small_chars(plan: _Plan) -> int:
    """The most JSON text a rule without comprehensions may read and still be surely small (see
    :meth:`CompiledRule._surely_small`): data within it is never refused by the bounds."""
    if plan.flat_sites < 0:
        return -1
    return max(-1, min(MAX_COLLECTION, (MAX_RULE_VISITS - plan.literal) // (1 + plan.flat_sites)))


@lru_cache(maxsize=1024)
def rule_set(sources: tuple[str, ...]) -> RuleSet:
    """The :class:`RuleSet` of these rule texts (cached); never raises."""
    return RuleSet(sources)


def _problem(check: Callable[[str], object], src: str) -> str | None:
    try:
        check(src)
    except RuleError as exc:
        return str(exc)
    return None


def check_rule_bounds(src: str) -> str | None:
    """Return None if `src` is within the size, nesting and comprehension bounds, else why not."""
    return _problem(_check_bounds, src)


def check_rule_syntax(src: str) -> str | None:
    """Return None if `src` compiles within bounds, else the error message."""
    return _problem(compile_rule, src)


def _to_cel(value: Any) -> Any:
    """Convert data into values cel accepts, copying only containers that need a change.

    Decimal becomes int when integral else float; tuples and sets become lists; dates (not
    datetimes, which cel maps to timestamps) become ISO strings. Anything else unknown is left
    for cel to reject loudly.
    """
    kind = type(value)
    if kind in _PLAIN or kind in _TEXT:
        return value
    if kind is dict or kind is list:  # plain JSON containers: copied only when an element changes
        items = value.values() if kind is dict else value
        converted = [_to_cel(v) for v in items]
        if all(a is b for a, b in zip(converted, items, strict=True)):
            return value
        return dict(zip(value, converted, strict=True)) if kind is dict else converted
    return _other_to_cel(value)


def _other_to_cel(value: Any) -> Any:
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
