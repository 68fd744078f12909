"""The process names the chart and Dockerfile pass to `midwatch` must exist in the real CLI.

Expected to fail until `midwatch.cli` lands on main; it is the contract check between the
deployment files and the application.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Same list as tests/helm/test_dockerfile.py::PROCESS_COMMANDS (that test ties it to the chart).
PROCESS_COMMANDS = ["api", "worker", "scheduler", "dashboard", "db upgrade"]


def _help(*args: str) -> str:
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH"
    result = subprocess.run(
        [uv, "run", "midwatch", *args, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_cli_module_importable():
    cli = importlib.import_module("midwatch.cli")
    assert callable(cli.main)


@pytest.mark.parametrize("command", PROCESS_COMMANDS)
def test_cli_exposes_process_command(command):
    """`midwatch --help` lists `api`, ...; `midwatch db --help` lists `upgrade`."""
    *parents, leaf = command.split()
    text = _help(*parents)
    assert re.search(rf"(?<![\w-]){re.escape(leaf)}(?![\w-])", text), f"`midwatch {command}` missing:\n{text}"
