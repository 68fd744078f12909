"""Shared fixtures for the Helm chart tests: load CI values files, render, split manifests.

Helpers are handed to tests through the ``kit`` fixture (not imported), so these modules work
whether or not ``tests/`` becomes a package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "midwatch"
CI_DIR = REPO_ROOT / "helm" / "ci"
VALUES_FILES = sorted(p.name for p in CI_DIR.glob("*.yaml"))
RELEASE = "mw"
NAMESPACE = "midwatch"


def load_ci_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CI_DIR / name).read_text()) or {}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Render the chart offline: {template path: text}."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every non-empty YAML document, NOTES.txt excluded."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def workloads(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, spec) for d in docs if (spec := pod_spec(d)) is not None]


def hook_weight(doc: dict[str, Any]) -> int:
    return int((doc["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0"))


def hooks(doc: dict[str, Any]) -> set[str]:
    raw = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
    return {h.strip() for h in raw.split(",") if h.strip()}


class ChartKit:
    """Namespace of chart helpers, exposed as the ``kit`` fixture."""

    repo_root = REPO_ROOT
    chart_dir = CHART_DIR
    ci_dir = CI_DIR
    values_files = VALUES_FILES
    release = RELEASE
    namespace = NAMESPACE
    load_ci_values = staticmethod(load_ci_values)
    render = staticmethod(render)
    manifests = staticmethod(manifests)
    of_kind = staticmethod(of_kind)
    pod_spec = staticmethod(pod_spec)
    workloads = staticmethod(workloads)
    hook_weight = staticmethod(hook_weight)
    hooks = staticmethod(hooks)

    def render_docs(self, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return manifests(render(values))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "values_file" in metafunc.fixturenames:
        metafunc.parametrize("values_file", VALUES_FILES)


@pytest.fixture(scope="session")
def kit() -> ChartKit:
    return ChartKit()


@pytest.fixture(scope="session")
def rendered_by_file() -> dict[str, dict[str, str]]:
    return {name: render(load_ci_values(name)) for name in VALUES_FILES}


@pytest.fixture(scope="session")
def docs_by_file(rendered_by_file: dict[str, dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    return {name: manifests(r) for name, r in rendered_by_file.items()}
