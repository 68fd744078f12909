"""The comparison subset of CEL, evaluated in Python: what most rules are, for a fraction of a cel call.

A rule such as ``output.n >= 0 && size(steps) <= 50`` or ``step.tool == 'crm.update' && step.args.amount
> 1000`` compares data paths with literals. In a running worker a cel call costs 10 to 20 us (its code and
data are cold in the CPU's caches between steps; 2.5 us in a tight loop), while the same comparison in
Python costs well under a microsecond. Governance pays that for every rule of every step.

:func:`compile_subset` accepts only this grammar, and returns None for any other text (the rule then
always goes to cel)::

    rule     := or
    or       := and ('||' and)*
    and      := unary ('&&' unary)*
    relation := unary (compare unary)?
    unary    := '!' unary | '-' number | '(' or ')' | operand
    compare  := '==' | '!=' | '<' | '<=' | '>' | '>='
    operand  := path | 'size' '(' path ')' | path '.' 'size' '(' ')' | literal
    path     := root ('.' name)*            root: input, item, steps, output, step
    literal  := int | double | 'string' | "string" | true | false | null

(ASCII literals without escapes; no comments, no arithmetic, no other function.)

**Exact or nothing.** The evaluator answers only where CEL's answer is plain: a comparison of two ints
(64-bit), two doubles (ordering only without NaN, which cel-rust refuses to order), two ASCII strings, two
bools (``==``/``!=``), or two nulls, of a path that exists; ``size()`` of a container or an ASCII string
(cel-rust counts a string's UTF-8 bytes). Anything else (a missing key, an int compared with a double, a
Decimal, a string outside ASCII) makes it return None, and the caller asks cel, which gives the exact value
or error. ``&&`` and ``||`` follow CEL's commutative rules: ``false && x`` is false and ``true || x`` is
true whatever ``x`` is, even unknown. But cel converts everything a rule reads before evaluating it, so
the predicate first checks that every path it reads holds a value cel takes (no lone surrogate, no list
where a field is read, no object): otherwise even ``true || ...`` is cel's to answer (an error).
A differential test (``tests/runner/test_rule_subset.py``) holds it to cel's answers; each divergence it
found (NaN ordering, UTF-8 sizes, conversion errors) is one of the rules above.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MISSING", "ROOTS", "Predicate", "Stopped", "compile_subset", "walk"]

Find = Callable[[tuple[str, ...]], Any]  # a data path -> its value, or MISSING
Predicate = Callable[[Mapping[str, Any]], bool | None]  # over the roots: True/False, or None: ask cel
_Node = Callable[[Find], Any]  # a value, or _UNKNOWN

ROOTS = frozenset({"input", "item", "steps", "output", "step"})  # the data a rule can read
_INT64 = (-(2**63), 2**63 - 1)
_TOKEN_RE = re.compile(r"""\s*(?:
    (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<str>'[^'\\\n]*'|"[^"\\\n]*")(?![\w'"])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)(?!['"])
  | (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|\.|-)
)""", re.VERBOSE)
MISSING = object()  # a path that does not resolve
_SCALARS = frozenset({int, float, bool, type(None)})
_MAX_DEPTH = 32  # nested `!` and parentheses: the parser and the predicate recurse once per level
_UNKNOWN = object()  # an operand whose value the subset cannot compare exactly


def _tokens(src: str) -> list[tuple[str, str]] | None:
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(src):
        if not src[at:].strip():
            break
        m = _TOKEN_RE.match(src, at)
        if m is None or m.end() == at:
            return None
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        at = m.end()
    return out


class _Parser:
    """Recursive descent over the tokens; every node is a function from the data to a value (or _UNKNOWN)."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0
        self.paths: dict[tuple[tuple[str, ...], bool], None] = {}  # (path, read only for its size), in order

    def peek(self, value: str, ahead: int = 0) -> bool:
        at = self.at + ahead
        return at < len(self.tokens) and self.tokens[at][1] == value

    def take(self, value: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens) or (value is not None and self.tokens[self.at][1] != value):
            raise ValueError(value)
        token = self.tokens[self.at]
        self.at += 1
        return token

    def rule(self) -> _Node:
        node = self.disjunction()
        if self.at != len(self.tokens):
            raise ValueError("trailing")
        return node

    def disjunction(self) -> _Node:
        return self._joined("||", self.conjunction, absorbing=True)

    def conjunction(self) -> _Node:
        return self._joined("&&", self.relation, absorbing=False)

    def _joined(self, op: str, operand: Callable[[], _Node], *, absorbing: bool) -> _Node:
        parts = [operand()]
        while self.peek(op):
            self.take()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else _logical(tuple(parts), absorbing)

    def relation(self) -> _Node:
        left = self.unary()
        if self.at < len(self.tokens) and self.tokens[self.at][1] in _COMPARE:
            return _compare(self.take()[1], left, self.unary())
        return left

    def unary(self) -> _Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ValueError("nested too deeply")  # `!!!!...` or `((((...` : cel's business, not a recursion here
        try:
            return self._unary()
        finally:
            self.depth -= 1

    def _unary(self) -> _Node:
        if self.peek("!"):
            self.take()
            return _not(self.unary())
        if self.peek("-"):
            self.take()
            kind, value = self.take()
            if kind != "num":
                raise ValueError("minus")
            return _Constant(-_number(value))
        if self.peek("("):
            self.take()
            inner = self.disjunction()
            self.take(")")
            return inner
        return self.operand()

    def operand(self) -> _Node:
        kind, value = self.take()
        if kind == "num":
            return _Constant(_number(value))
        if kind == "str":
            text = value[1:-1]
            if not text.isascii():
                raise ValueError("non-ASCII literal")
            return _Constant(text)
        if kind != "name":
            raise ValueError(value)
        if value in _LITERALS:
            return _Constant(_LITERALS[value])
        if value == "size" and self.peek("("):
            self.take()
            path = self.path(self.take()[1])
            self.take(")")
            self.paths[(path, True)] = None
            return _size(path)
        path = self.path(value)
        if self.peek(".") and self.peek("size", 1):
            for token in (".", "size", "(", ")"):
                self.take(token)
            self.paths[(path, True)] = None
            return _size(path)
        self.paths[(path, False)] = None
        return _path(path)

    def path(self, root: str) -> tuple[str, ...]:
        if root not in ROOTS:
            raise ValueError(root)
        parts = [root]
        while (self.peek(".") and self.at + 1 < len(self.tokens) and self.tokens[self.at + 1][0] == "name"
               and not self.peek("size", 1)):
            self.take(".")
            parts.append(self.take()[1])
        return tuple(parts)


_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">="})
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _number(text: str) -> int | float:
    if text.isdigit():
        value = int(text)
        if value > _INT64[1]:
            raise ValueError("int64")
        return value
    return float(text)


class _Constant:
    """A literal: kept as a value so a comparison with it is specialised when it is compiled."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, _find: Find) -> Any:
        return self.value


def _path(path: tuple[str, ...]) -> _Node:
    return lambda find: find(path)


def _size(path: tuple[str, ...]) -> _Node:
    def size(find: Find) -> Any:
        value = find(path)  # what cel would be handed converts a mapping to a map, a list or tuple to a list
        if type(value) is str:  # cel-rust counts a string's UTF-8 bytes: the same as its length in ASCII only
            return len(value) if value.isascii() else _UNKNOWN
        return len(value) if isinstance(value, Mapping | list | tuple) else _UNKNOWN
    return size


def _kind(value: Any) -> type | None:
    """The CEL type the subset compares exactly, or None."""
    kind = type(value)
    if kind is int:
        return int if _INT64[0] <= value <= _INT64[1] else None
    if kind is str:
        return str if value.isascii() else None
    if kind is float or kind is bool or value is None:
        return kind
    return None


_ORDERED = frozenset({int, float, str})
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _compare(op: str, left: _Node, right: _Node) -> _Node:
    test = _OPERATORS[op]
    ordered = op not in ("==", "!=")
    if isinstance(right, _Constant):  # the common shape: path (or size) OP literal
        return _against(test, ordered, left, right.value)

    def compare(find: Find) -> Any:
        a, b = left(find), right(find)
        kind = _kind(a)
        if kind is None or kind is not _kind(b) or (ordered and kind not in _ORDERED):
            return _UNKNOWN
        if ordered and kind is float and (a != a or b != b):  # noqa: PLR0124 - NaN: cel-rust has no ordering
            return _UNKNOWN
        return test(a, b)
    return compare


def _against(test: Callable[[Any, Any], bool], ordered: bool, left: _Node, literal: Any) -> _Node:
    kind = _kind(literal)
    if kind is None or (ordered and kind not in _ORDERED):
        raise ValueError("never comparable")  # cel decides every time: no predicate
    low, high = _INT64
    if kind is int:
        def compare_int(find: Find) -> Any:
            a = left(find)
            return test(a, literal) if type(a) is int and low <= a <= high else _UNKNOWN
        return compare_int
    if kind is str:
        def compare_text(find: Find) -> Any:
            a = left(find)
            return test(a, literal) if type(a) is str and a.isascii() else _UNKNOWN
        return compare_text

    if kind is float and ordered:
        def compare_double(find: Find) -> Any:  # cel-rust has no ordering for NaN: an error, not false
            a = left(find)
            return test(a, literal) if type(a) is float and a == a else _UNKNOWN  # noqa: PLR0124 - NaN test
        return compare_double

    def compare(find: Find) -> Any:  # a double (==, !=), a bool, null: the exact type is enough
        a = left(find)
        return test(a, literal) if type(a) is kind else _UNKNOWN
    return compare


def _not(inner: _Node) -> _Node:
    def negate(find: Find) -> Any:
        value = inner(find)
        return (not value) if type(value) is bool else _UNKNOWN
    return negate


def _logical(parts: tuple[_Node, ...], absorbing: bool) -> _Node:
    """``&&`` (absorbing: False) or ``||`` (absorbing: True) with CEL's commutative rules: ``false && x`` is
    false and ``true || x`` is true whatever ``x`` is, an error included."""
    def combine(find: Find) -> Any:
        unknown = False
        for part in parts:
            value = part(find)
            if value is absorbing:
                return absorbing
            unknown = unknown or type(value) is not bool
        return _UNKNOWN if unknown else not absorbing
    return combine


def compile_subset(src: str, max_chars: int) -> Predicate | None:
    """``src`` as a Python predicate when it is in the subset (see the module docstring), else None.

    ``max_chars``: the most JSON text the rule may read for cel's bounds (:mod:`runner.rules`) never to
    refuse it; the predicate says None for data that may be larger (an upper bound of that text, counted
    per path), so the bounds are applied as they would be to the rule alone.
    """
    if "//" in src:
        return None
    tokens = _tokens(src)
    if not tokens:
        return None
    parser = _Parser(tokens)
    try:
        node = parser.rule()
    except (ValueError, RecursionError):
        return None
    paths = tuple((path, size_only, sum(len(part) + 6 for part in path)) for path, size_only in parser.paths)

    def predicate(data: Mapping[str, Any]) -> bool | None:
        # Every path first: cel converts all the data a rule reads before it evaluates anything, so a value
        # it cannot convert fails the rule even where `true || ...` would not look at it.
        values: dict[tuple[str, ...], Any] = {}
        chars = 0
        for path, size_only, keys in paths:
            value = walk(data, path)
            if type(value) is Stopped:  # fine for cel if it can convert the value (a field of it is an error)
                if not _fits(value.value):
                    return None
                value = MISSING
            if not (_fits_size(value) if size_only else _fits(value)):
                return None
            chars += keys + _json_chars(value)
            if chars > max_chars:
                return None  # perhaps over the bounds: the rule's own estimate decides
            values[path] = value
        answer = node(values.__getitem__)
        return answer if type(answer) is bool else None
    return predicate


def _json_chars(value: Any) -> int:
    """At least the length of ``value``'s JSON text as the bounds measure it: a container read for its size
    is a list of as many nulls; a character may take 12 (a surrogate pair, escaped); a number at most 24."""
    if value is MISSING:
        return 0
    if type(value) in _SCALARS:  # asked first: an isinstance against the Mapping ABC is the slow part
        return 24
    if isinstance(value, str):
        return 12 * len(value) + 2
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return 6 * len(value) + 2
    return 24


class Stopped:
    """Where a path runs into a value that is not a map (a list, a scalar): cel is handed that value whole,
    and fails reading a field of it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def walk(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` as given, ``MISSING`` where a key is missing, or :class:`Stopped`."""
    node: Any = data.get(path[0], MISSING)
    for part in path[1:]:
        if type(node) is dict or isinstance(node, Mapping):
            node = node.get(part, MISSING)
        elif node is MISSING:
            return MISSING
        else:
            return Stopped(node)
    return node


def _fits(value: Any) -> bool:
    """Whether cel takes ``value`` as it is (what the subset compares), judged conservatively."""
    kind = type(value)
    if value is MISSING or kind is bool or kind is float or value is None:
        return True
    if kind is int:
        return bool(_INT64[0] <= value <= _INT64[1])
    if kind is str:
        return bool(value.isascii()) or _utf8(value)
    return False


def _fits_size(value: Any) -> bool:
    """A path read only for its size: cel is handed a list of as many nulls for a container."""
    return isinstance(value, Mapping | list | tuple | set | frozenset) or _fits(value)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800" decodes to one): cel refuses the string
        return False
    return True


