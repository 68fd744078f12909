"""``midwatch bench`` runs the benchmarks of a source checkout, and says what to do when there is none."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from midwatch import cli


def test_from_a_source_checkout_it_runs_the_benchmarks_module(capfd: pytest.CaptureFixture[str]) -> None:
    code = cli.cmd_bench(argparse.Namespace(names=["no_such_benchmark"]))
    assert code == 2  # benchmarks/__main__.py ran and refused the unknown name
    assert "unknown benchmark(s): no_such_benchmark" in capfd.readouterr().out


def test_installed_from_the_wheel_it_says_to_clone_the_repository(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "site-packages" / "midwatch"
    installed.mkdir(parents=True)
    monkeypatch.setattr(cli, "__file__", str(installed / "cli.py"))
    with pytest.raises(SystemExit) as stopped:
        cli.cmd_bench(argparse.Namespace(names=[]))
    message = str(stopped.value.code)
    assert "has none" in message and "Clone the repository" in message and "uv run midwatch bench" in message
