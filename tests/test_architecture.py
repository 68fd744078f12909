"""The rules of docs/ARCHITECTURE.md, checked from the source with ``ast`` (nothing is imported).

    benchmarks/   ──> midwatch/ and below, never runner.engine (it uses runner.actors.run_once)
    midwatch/     ──> anything below (the composition root)
    platform_api/ ──> runner.spec, runner.errors, runner.templating, runner.rules, runner.catalog,
                     runner.jsonschemas (never the engine), tenants/
    dashboard/    ──┐
    runner/       ──┴──> tenants/   (the only package that touches the database)

- No import runs back up a layer (ranks below), and ``tenants.kit`` imports no domain folder.
- No import loop between domain folders (``tenants.runs``, ``runner.providers``, ``platform_api.routes``...:
  the first two parts of a module's name); a loop means two folders are one concern, or one of them hides
  a third.
- No module over 500 lines unless its docstring says why (``Why over 500 lines:``), no function over 60
  lines except the short list in :data:`LONG_FUNCTIONS`.

Every import counts: module level, inside functions, under ``if TYPE_CHECKING:``, relative imports
(resolved), and ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("platform_api", "runner", "dashboard", "tenants", "midwatch", "benchmarks")
RANK = {"tenants": 0, "runner": 1, "dashboard": 1, "platform_api": 2, "midwatch": 3, "benchmarks": 4}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
LONG_MODULE_REASON = "Why over 500 lines:"
# Functions allowed over MAX_FUNCTION_LINES, each with its reason. Keep it short.
LONG_FUNCTIONS: dict[str, str] = {}
RUNNER_PUBLIC = ("runner.spec", "runner.errors", "runner.templating", "runner.rules", "runner.catalog",
                 "runner.jsonschemas")

# Known exceptions, reported rather than silently allowed. The test fails if one disappears (delete the
# entry) or a new one appears, so the list can only shrink.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()  # none: keep it that way


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "platform_api.routes.runs"
    target: str  # the imported module, e.g. "runner.spec" (for "from a.b import c": "a.b.c" if a.b.c is a module)
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[Import]:
    """Every module that ``source`` (the text of ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            yield Import(module, base, node.lineno)
            for alias in node.names:  # "from runner import engine" imports runner.engine
                if _is_module(f"{base}.{alias.name}"):
                    yield Import(module, f"{base}.{alias.name}", node.lineno)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                yield Import(module, node.args[0].value, node.lineno)


def _all_imports() -> list[Import]:
    found: list[Import] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            found.extend(imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"))
    return found


def _top(name: str) -> str:
    return name.partition(".")[0]


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(imports: list[Import]) -> list[tuple[Import, str]]:
    """Each import that breaks a rule, with the rule."""
    bad: list[tuple[Import, str]] = []
    for imp in imports:
        src, dst = _top(imp.module), imp.target
        if src == "tenants" and _within(dst, "platform_api", "runner", "dashboard", "midwatch"):
            bad.append((imp, "tenants imports none of platform_api/runner/dashboard/midwatch"))
        if src in ("platform_api", "runner", "dashboard") and _within(dst, "sqlalchemy"):
            bad.append((imp, "only tenants (and the composition root) import SQLAlchemy"))
        if src == "platform_api":
            if _within(dst, "runner") and not _within(dst, *RUNNER_PUBLIC):
                bad.append((imp, f"platform_api may import only {', '.join(RUNNER_PUBLIC)} from runner"))
            if _within(dst, "dashboard", "midwatch"):
                bad.append((imp, "platform_api imports neither dashboard nor midwatch"))
        if src == "runner" and _within(dst, "platform_api", "dashboard", "midwatch"):
            bad.append((imp, "runner imports neither platform_api, dashboard nor midwatch"))
        if src == "dashboard" and _within(dst, "platform_api", "runner", "midwatch"):
            bad.append((imp, "dashboard reads through tenants only"))
        if _within(dst, "runner.engine") and src not in ("runner", "midwatch"):
            bad.append((imp, "runner.engine is private to runner (and the composition root)"))
        top = _top(dst)
        if top in RANK and top != src and src in RANK and RANK[top] >= RANK[src]:
            bad.append((imp, f"{src} may not import {top}: an import back up (or across) a layer"))
        if _within(imp.module, "tenants.kit") and _within(dst, "tenants") and not _within(dst, "tenants.kit"):
            bad.append((imp, "tenants.kit is the bottom of tenants: it imports no domain folder"))
    return bad


def test_packages_import_only_across_the_allowed_boundaries() -> None:
    imports = _all_imports()
    assert len({i.module for i in imports}) > 40, "the scan found too few modules: is ROOT right?"
    found = violations(imports)
    unexpected = [f"{imp}: {rule}" for imp, rule in found if (imp.module, _pkg(imp.target)) not in KNOWN_VIOLATIONS]
    assert not unexpected, "\n".join(unexpected)
    still_there = {(imp.module, _pkg(imp.target)) for imp, _ in found}
    fixed = KNOWN_VIOLATIONS - still_there
    assert not fixed, f"fixed, so delete from KNOWN_VIOLATIONS: {sorted(fixed)}"


def _folder(module: str) -> str:
    """The domain folder of a module: its first two name parts (``tenants.runs.service`` -> ``tenants.runs``)."""
    return ".".join(module.split(".")[:2])


def folder_cycles(imports: list[Import]) -> list[list[str]]:
    """Every import loop between domain folders, as the folders of one strongly connected component."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        a, b = _folder(imp.module), _folder(imp.target)
        if a != b and _top(b) in RANK:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _loop_witness(imports: list[Import], folders: list[str]) -> list[str]:
    members = set(folders)
    return sorted({str(i) for i in imports if _folder(i.module) in members and _folder(i.target) in members
                   and _folder(i.module) != _folder(i.target)})


def test_no_import_loop_between_domain_folders() -> None:
    imports = _all_imports()
    loops = folder_cycles(imports)
    assert not loops, "\n".join(f"loop between {', '.join(c)}:\n  " + "\n  ".join(_loop_witness(imports, c))
                                 for c in loops)


def test_the_loop_checker_finds_a_loop_through_three_folders() -> None:
    source = {"tenants.runs.service": "from tenants.budgets import service",
              "tenants.budgets.service": "from tenants.scheduling.repository import x",
              "tenants.scheduling.repository": "from tenants.runs.models import Run"}
    imports = [i for module, text in source.items() for i in imports_of(text, module)]
    assert folder_cycles(imports) == [["tenants.budgets", "tenants.runs", "tenants.scheduling"]]
    assert folder_cycles(imports[:2]) == []


def _source_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:  # generated by Alembic, reviewed by hand
                yield path


def test_no_module_over_500_lines_without_a_reason_at_its_top() -> None:
    long = []
    for path in _source_files():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_MODULE_LINES and LONG_MODULE_REASON not in docstring:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, f"split these, or say why at the top ('{LONG_MODULE_REASON} ...'):\n" + "\n".join(long)


def long_functions(source: str, module: str) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function in ``source`` over MAX_FUNCTION_LINES."""
    found = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = (child.end_lineno or child.lineno) - child.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append((name, length))
                walk(child, name)

    walk(ast.parse(source), module)
    return found


def test_no_function_over_60_lines_except_the_documented_ones() -> None:
    found = {name: n for path in _source_files()
             for name, n in long_functions(path.read_text(encoding="utf-8"), _module_name(path))}
    unexpected = sorted(f"{name}: {n} lines" for name, n in found.items() if name not in LONG_FUNCTIONS)
    assert not unexpected, "split these (or add them to LONG_FUNCTIONS with a reason):\n" + "\n".join(unexpected)
    assert not set(LONG_FUNCTIONS) - set(found), "shorter now: delete from LONG_FUNCTIONS"
    assert len(LONG_FUNCTIONS) <= 5, "the exception list only shrinks"


def test_the_size_checker_counts_nested_functions() -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(61))
    source = f"def outer():\n    def inner():\n{body}\n    return inner\n"
    assert long_functions(source, "m") == [("m.outer", 64), ("m.outer.inner", 62)]


def _pkg(target: str) -> str:
    """``sqlalchemy.orm.session`` -> ``sqlalchemy.orm`` (the granularity of KNOWN_VIOLATIONS)."""
    return ".".join(target.split(".")[:2])


def test_runner_public_modules_never_load_the_engine() -> None:
    """platform_api imports runner.spec & co; those must not pull the engine, broker or actors in transitively."""
    by_module: dict[str, set[str]] = {}
    for imp in _all_imports():
        by_module.setdefault(imp.module, set()).add(imp.target)
    seen: set[str] = set()
    todo = list(RUNNER_PUBLIC)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(t for t in by_module.get(current, ()) if _within(t, "runner"))
    private = sorted(m for m in seen if m.startswith(("runner.engine", "runner.broker", "runner.actors",
                                                       "runner.sweeper")))
    assert not private, f"the public runner modules load private machinery: {private}"


@pytest.mark.parametrize(("module", "source", "rule"), [
    ("platform_api.routes.x", "from runner.engine._execute import execute", "private to runner"),
    ("platform_api.routes.x", "from runner import broker", "platform_api may import only"),
    ("platform_api.app", "def f():\n    from sqlalchemy import text", "SQLAlchemy"),
    ("dashboard.app", "import sqlalchemy.orm", "SQLAlchemy"),
    ("dashboard.app", "from runner.spec import AgentSpec", "dashboard reads through tenants only"),
    ("tenants.runs.service", "from ..kit import db\nfrom ...runner import spec", "tenants imports none"),
    ("tenants.runs.service", "import importlib\nimportlib.import_module('platform_api.app')", "tenants imports none"),
    ("runner.tools.base", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from platform_api import auth",
     "runner imports neither"),
    ("benchmarks.engine", "from runner.engine._run import work", "private to runner"),
    ("dashboard.data", "from midwatch import cli", "back up"),
    ("tenants.kit.db", "from tenants.runs.models import Run", "tenants.kit is the bottom"),
    ("runner.actors", "from benchmarks import engine", "back up"),
])
def test_the_checker_catches_each_kind_of_violation(module: str, source: str, rule: str) -> None:
    found = violations(list(imports_of(source, module)))
    assert any(rule in r for _, r in found), found


def test_the_checker_allows_the_documented_imports() -> None:
    allowed = "\n".join([
        "from runner.spec import parse_spec", "from runner.errors import SpecInvalid",
        "from tenants.kit.db import unit_of_work", "from .schemas import Page",
    ])
    assert violations(list(imports_of(allowed, "platform_api.routes.agents"))) == []
    assert violations(list(imports_of("from runner.engine._execute import x\nimport sqlalchemy",
                                      "midwatch.services"))) == []
