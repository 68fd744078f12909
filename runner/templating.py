"""`{{ path }}` templates: lookups into dicts and lists, nothing else.

A template names a value by a dotted/indexed path (`{{ steps.fetch.output.items[0].id }}`).
There are no expressions, filters or attribute access: each segment is a dict key or a
list index, so a template can never reach a Python object's attributes or methods.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from runner.errors import TemplateError

__all__ = ["references", "render", "root_of"]

_OPEN = "{{"
_CLOSE = "}}"
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_PATH_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT}|\[\d{{1,9}}\])*")
_PART_RE = re.compile(rf"\.?({_SEGMENT})|\[(\d{{1,9}})\]")

PathPart = str | int
# A parsed template: literal text pieces interleaved with parsed paths.
_Piece = str | tuple[str, tuple[PathPart, ...]]


@lru_cache(maxsize=4096)
def _parse_path(expr: str) -> tuple[PathPart, ...]:
    """Parse a stripped path expression into key (str) and index (int) parts."""
    if not expr:
        raise TemplateError("empty template '{{ }}'")
    if not _PATH_RE.fullmatch(expr):
        raise TemplateError(
            f"invalid template path {expr!r}: only dotted keys and [index] lookups are allowed "
            "(no expressions, filters or calls)"
        )
    parts: list[PathPart] = []
    for m in _PART_RE.finditer(expr):
        key, index = m.group(1), m.group(2)
        parts.append(key if key is not None else int(index))
    return tuple(parts)


@lru_cache(maxsize=4096)
def _parse_template(text: str) -> tuple[_Piece, ...]:
    """Split `text` into literal pieces and (expression, path) pieces; raise on malformed ones."""
    pieces: list[_Piece] = []
    pos = 0
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            break
        end = text.find(_CLOSE, start + 2)
        inner = text[start + 2 : end] if end >= 0 else text[start + 2 :]
        if end < 0 or _OPEN in inner:
            raise TemplateError(f"unclosed template at offset {start}: {text[start : start + 40]!r}")
        expr = inner.strip()
        path = _parse_path(expr)
        if start > pos:
            pieces.append(text[pos:start])
        pieces.append((expr, path))
        pos = end + 2
    if pos < len(text):
        pieces.append(text[pos:])
    return tuple(pieces)


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def references(value: Any) -> list[tuple[str, str]]:
    """List every `{{ expr }}` in `value` (a str, or dicts/lists of them) as (field_path, expr).

    `field_path` locates the string within `value`: "" for `value` itself, "to", "body[0]",
    "headers.x". Raises TemplateError for malformed templates (unclosed, empty, bad path).
    """
    found: list[tuple[str, str]] = []
    _collect(value, "", found)
    return found


def _collect(value: Any, where: str, found: list[tuple[str, str]]) -> None:
    if isinstance(value, str):
        if _OPEN not in value:
            return
        try:
            pieces = _parse_template(value)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}" if where else str(exc)) from None
        found.extend((where, piece[0]) for piece in pieces if isinstance(piece, tuple))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, _join(where, str(key)), found)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _collect(item, _join(where, index), found)


def root_of(expr: str) -> tuple[str, ...]:
    """Split a template path into its segments: "steps.fetch.output.items[0]" -> ("steps", ..., "0").

    Indices come back as their decimal string; keys always start with a letter or underscore,
    so the two cannot be confused. Raises TemplateError for an invalid path.
    """
    return tuple(str(part) for part in _parse_path(expr.strip()))


def _lookup(context: Mapping[str, Any], expr: str, path: tuple[PathPart, ...]) -> Any:
    current: Any = context
    for depth, part in enumerate(path):
        if isinstance(part, int):
            if not isinstance(current, list | tuple):
                where = _render_path(path[:depth])
                raise TemplateError(
                    f"template {{{{ {expr} }}}}: {where} is a {type(current).__name__}, not a list"
                )
            if part >= len(current):
                where = _render_path(path[:depth])
                raise TemplateError(
                    f"template {{{{ {expr} }}}}: index {part} out of range ({where} has {len(current)})"
                )
        elif not isinstance(current, Mapping):
            # Deliberately no getattr: templates only see data, never Python objects.
            where = _render_path(path[:depth])
            raise TemplateError(
                f"template {{{{ {expr} }}}}: {where} is a {type(current).__name__}, not a mapping"
            )
        elif part not in current:
            where = _render_path(path[:depth]) or "the context"
            raise TemplateError(f"template {{{{ {expr} }}}}: key {part!r} not found in {where}")
        current = current[part]
    return current


def _render_path(path: tuple[PathPart, ...]) -> str:
    out = ""
    for part in path:
        out = _join(out, part)
    return out


def _to_text(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template in `value` (a str, or dicts/lists of them) against `context`.

    A string that is exactly one `{{ expr }}` (surrounding whitespace allowed) becomes the
    looked-up value itself, keeping its type; otherwise each template is replaced by its text
    (JSON for dicts and lists). Other values pass through unchanged. Raises TemplateError when
    a template is malformed or its path does not exist.
    """
    if isinstance(value, str):
        if _OPEN not in value:
            return value
        pieces = _parse_template(value)
        paths = [p for p in pieces if isinstance(p, tuple)]
        if len(paths) == 1 and all(isinstance(p, tuple) or not p.strip() for p in pieces):
            # Exactly one template and only whitespace around it: keep the value's own type.
            return _lookup(context, paths[0][0], paths[0][1])
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
            else:
                out.append(_to_text(_lookup(context, piece[0], piece[1])))
        return "".join(out)
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, context) for item in value]
    return value
