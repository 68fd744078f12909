"""The package boundaries of ARCHITECTURE.md, checked from the source with ``ast`` (nothing is imported).

    platform_api/ ──┐
    dashboard/    ──┼──> tenants/   (the only package that touches the database)
    runner/       ──┘
    platform_api/ ──> runner.spec, runner.errors, runner.templating, runner.rules, runner.catalog,
                     runner.jsonschemas (never the engine)
    midwatch/     ──> anything (the composition root)

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
PACKAGES = ("platform_api", "runner", "dashboard", "tenants", "midwatch")
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
