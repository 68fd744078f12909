"""Driver for tests/midwatch/test_processes_on_one_host.py, run inside a private network namespace (so the
default ports 8080, 9090, 9091, 9092 are this run's alone, whatever else the machine runs).

Starts ``midwatch api``, ``midwatch scheduler`` and two ``midwatch worker`` processes with default settings
on one SQLite data dir, waits until each answers, scrapes /healthz and /metrics of each, runs
``midwatch status --format json``, stops everything with SIGTERM and prints one JSON document on stdout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


def _midwatch(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - closed when the driver exits
    return subprocess.Popen([sys.executable, "-m", "midwatch.cli", *args], env=env, cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before answering {url}")
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _scrape(base: str) -> dict[str, Any]:
    health_status, health_body = _get(f"{base}/healthz")
    metrics_status, body = _get(f"{base}/metrics")
    samples: list[list[Any]] = []
    for family in text_string_to_metric_families(body.decode()):
        samples.extend([s.name, dict(s.labels), s.value] for s in family.samples)
    return {"healthz": [health_status, json.loads(health_body)], "metrics_status": metrics_status, "samples": samples}


def main() -> int:
    work = Path(sys.argv[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDWATCH_", "PROMETHEUS_"))}
    env.update({"MIDWATCH_DATA_DIR": str(work / "data"), "MIDWATCH_OPERATOR_KEY": "mw_op_onehost_0123456789abcdef",
                "MIDWATCH_HEARTBEAT_SECONDS": "1"})
    subprocess.run([sys.executable, "-m", "midwatch.cli", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    result: dict[str, Any] = {"printed": {}, "scrapes": {}}
    try:
        procs["api"] = _midwatch("api", env=env, log=work / "api.log")
        _wait("http://127.0.0.1:8080/healthz", procs["api"])
        procs["scheduler"] = _midwatch("scheduler", env=env, log=work / "scheduler.log")
        _wait("http://127.0.0.1:9090/healthz", procs["scheduler"])
        procs["worker-1"] = _midwatch("worker", env=env, log=work / "worker-1.log")
        _wait("http://127.0.0.1:9091/healthz", procs["worker-1"])
        procs["worker-2"] = _midwatch("worker", env=env, log=work / "worker-2.log")
        _wait("http://127.0.0.1:9092/healthz", procs["worker-2"])
        time.sleep(2.5)  # two heartbeat periods: every process's row is in the database
        for name, port in (("api", 8080), ("scheduler", 9090), ("worker-1", 9091), ("worker-2", 9092)):
            result["scrapes"][name] = _scrape(f"http://127.0.0.1:{port}")
        status = subprocess.run([sys.executable, "-m", "midwatch.cli", "status", "--format", "json"], env=env,
                                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        result["status"] = {"exit_code": status.returncode, "report": json.loads(status.stdout or "{}"),
                            "stderr": status.stderr[-2000:]}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        result["exit_codes"] = {name: proc.returncode for name, proc in procs.items()}
        for name in procs:
            text = (work / f"{name}.log").read_text(errors="replace")
            found = re.search(r"health and metrics on http://[\d.]+:(\d+)", text)
            result["printed"][name] = int(found.group(1)) if found else None
            result.setdefault("logs", {})[name] = text[-3000:]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
