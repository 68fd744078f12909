"""The Dockerfile, checked as text (no Docker daemon here), and the process names the chart
passes to the image's `midwatch` entrypoint."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# Every process the chart starts, as the argument(s) after the `midwatch` entrypoint.
# tests/helm/test_cli_commands.py checks the same list against `midwatch --help`.
PROCESS_COMMANDS = ["api", "worker", "scheduler", "dashboard", "db upgrade"]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Minimal parser: joins continuations, drops comments, splits into FROM stages.
    Returns (global ARG defaults, stages) with ${ARG} expanded in FROM lines."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append((buffer + line).strip())
        buffer = ""
    if buffer:
        logical.append(buffer.strip())

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest)
            parts = [p for p in expanded.split() if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def test_multi_stage_build():
    stages = _stages()
    assert len(stages) >= 3, [s.base for s in stages]
    assert [s.name for s in stages][-1] == "runtime"


def test_base_images_are_pinned():
    stages = _stages()
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue
        _repo, _, tag = stage.base.partition(":")
        assert tag and tag != "latest", f"unpinned base image {stage.base}"
    uv = [s.base for s in stages if s.base.startswith("ghcr.io/astral-sh/uv")]
    assert uv and re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", uv[0]), uv
    python = [s.base for s in stages if s.base.startswith("python:")]
    assert python
    for base in python:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base


def test_final_stage_runs_as_numeric_non_root_user():
    final = _stages()[-1]
    user = final.last("USER")
    assert user, "final stage has no USER"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, user
    assert not gid or (gid.isdigit() and int(gid) > 0), user


def test_final_stage_matches_chart_security_context():
    import yaml

    values = yaml.safe_load((REPO_ROOT / "helm" / "midwatch" / "values.yaml").read_text())
    uid = int(_stages()[-1].last("USER").partition(":")[0])
    assert values["securityContext"]["runAsUser"] == uid


def test_entrypoint_and_default_command():
    final = _stages()[-1]
    assert json.loads(final.last("ENTRYPOINT")) == ["midwatch"]
    cmd = json.loads(final.last("CMD"))
    assert " ".join(cmd) in PROCESS_COMMANDS
    assert cmd == ["api"]


def test_uv_builds_from_the_lockfile_without_dev_dependencies():
    stages = _stages()
    builder_runs = " ".join(run for s in stages[:-1] for run in s.all("RUN"))
    assert "uv sync" in builder_runs
    for run in (r for s in stages[:-1] for r in s.all("RUN") if "uv sync" in r):
        assert "--frozen" in run and "--no-dev" in run, run


def test_final_stage_has_no_build_tools_or_caches():
    final = _stages()[-1]
    runs = " ".join(final.all("RUN"))
    assert not re.search(r"\b(apt-get|apt|apk)\s+(-\S+\s+)*install\b", runs), "build tools in the final image"
    assert "uv " not in runs and "pip install" not in runs
    copies = final.all("COPY")
    assert copies, "final stage copies nothing"
    for copy in copies:
        assert "--from=" in copy, f"final stage copies from the build context: {copy}"
        assert "--from=uv" not in copy, "uv must not be in the final image"
        assert ".cache" not in copy


def test_environment_fits_a_read_only_root_filesystem():
    env = " ".join(_stages()[-1].all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert "MIDWATCH_DATA_DIR=/tmp/" in env


def test_dockerignore_keeps_the_context_small():
    entries = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "helm"} <= entries
    assert "README.md" not in entries and "uv.lock" not in entries and "pyproject.toml" not in entries


def test_every_package_is_copied_into_the_build():
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copies = " ".join(c for s in _stages()[:-1] for c in s.all("COPY"))
    for package in packages:
        assert re.search(rf"\b{package}\b", copies), f"{package} not copied into the builder"
    assert "uv.lock" in copies and "pyproject.toml" in copies


def test_chart_process_args_match_process_commands(kit):
    """The args every rendered container passes to the entrypoint are exactly PROCESS_COMMANDS."""
    seen: set[str] = set()
    for name in kit.values_files:
        for doc in kit.render_docs(kit.load_ci_values(name)):
            spec = kit.pod_spec(doc)
            if spec is None:
                continue
            for container in spec["containers"]:
                assert "command" not in container, "the chart must use the image ENTRYPOINT"
                seen.add(" ".join(container["args"]))
    assert sorted(seen) == sorted(PROCESS_COMMANDS)
