"""Several processes on one host, as a small install or a docker-compose file runs them: `midwatch api`,
`midwatch scheduler` and two `midwatch worker` with default settings all start, each answers /healthz and
/metrics on its own port, and a port that is taken is one line naming the setting, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CI, ROOT

DRIVER = Path(__file__).with_name("one_host_driver.py")


def _netns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def one_host(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The driver's report: four real processes started with default ports in a private network namespace."""
    if not _netns_available():
        message = "needs `unshare -n` (root) to own the default ports 8080/9090-9092 without disturbing the host"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("onehost")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDWATCH_")}
    done = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable,
                           str(DRIVER), str(work)], capture_output=True, text=True, timeout=240, env=env, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _samples(report: dict[str, Any], process: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, value) for n, labels, value in report["scrapes"][process]["samples"] if n == name]


def test_api_scheduler_and_two_workers_start_with_default_settings(one_host: dict[str, Any]) -> None:
    assert one_host["printed"] == {"api": None, "scheduler": 9090, "worker-1": 9091, "worker-2": 9092}, \
        "each process announces where its health and metrics are"
    for process, scrape in one_host["scrapes"].items():
        assert scrape["healthz"] == [200, {"status": "ok"}], process
        assert scrape["metrics_status"] == 200, process
        assert _samples(one_host, process, "midwatch_build_info"), f"{process}: /metrics is not Midwatch's"
    for process, code in one_host["exit_codes"].items():
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught: -15 is its clean exit
        clean = (0, -15) if process == "api" else (0,)
        assert code in clean, f"{process} did not stop cleanly on SIGTERM:\n{one_host['logs'][process]}"
    for process, log in one_host["logs"].items():
        assert "Traceback" not in log, f"{process}:\n{log}"


def test_each_worker_publishes_a_heartbeat_that_status_and_the_gauges_see(one_host: dict[str, Any]) -> None:
    for process in ("api", "scheduler"):  # the database gauges: exported by the api and the scheduler
        assert _samples(one_host, process, "midwatch_workers_alive") == [({}, 2.0)], process
        assert _samples(one_host, process, "midwatch_schedulers_alive") == [({}, 1.0)], process
    for worker in ("worker-1", "worker-2"):  # a worker's own heartbeat gauge, and no database gauges
        assert [labels for labels, _ in _samples(one_host, worker, "midwatch_worker_heartbeat_timestamp_seconds")] \
            == [{"kind": "worker"}]
        assert not _samples(one_host, worker, "midwatch_workers_alive")
    status = one_host["status"]
    assert status["exit_code"] == 0, status
    assert status["report"]["status"] == "healthy"
    ports = sorted((p["kind"], p["health_port"]) for p in status["report"]["facts"]["processes"])
    assert ports == [("scheduler", 9090), ("worker", 9091), ("worker", 9092)]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def _start(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MIDWATCH_")}
    full.update({"MIDWATCH_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run([sys.executable, "-m", "midwatch.cli", *args], env=full, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("process", ["scheduler", "worker"])
def test_a_taken_health_port_is_one_line_naming_the_setting(process: str, taken_port: int, tmp_path: Path) -> None:
    done = _start([process], {"MIDWATCH_HEALTH_PORT": str(taken_port)}, tmp_path)
    assert done.returncode == 2, done
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "MIDWATCH_HEALTH_PORT" in lines[0] and str(taken_port) in lines[0] and "in use" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_taken_api_port_is_one_line_naming_the_setting(taken_port: int, tmp_path: Path) -> None:
    done = _start(["api", "--port", str(taken_port)], {}, tmp_path)
    assert done.returncode == 2, done
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "MIDWATCH_PORT" in lines[0] and str(taken_port) in lines[0], lines
