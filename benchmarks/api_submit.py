"""``api_submit``: POST runs from a load generator in its own process (16 keep-alive clients, 30 s) against
``midwatch api`` on PostgreSQL + Redis (one API process per CPU), and against the embedded default
(``midwatch up``: SQLite, in-process broker and worker threads executing the runs as they arrive).

Prints req/s, p50 and p99 for each, beside the targets (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from benchmarks._common import ROOT, bench_environment, make_agent, spawn

SECONDS = float(os.environ.get("MIDWATCH_BENCH_SUBMIT_SECONDS", "30"))
CLIENTS = 16
_LIMITS = {"MIDWATCH_RATE_LIMIT_PER_MINUTE": "100000000", "MIDWATCH_LOG_LEVEL": "warning"}


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API at {base} did not become healthy")


def _load(base: str, key: str, agent: str, seconds: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", base, key, agent, str(seconds), str(CLIENTS)],
                         cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _postgres() -> dict[str, Any]:
    from tenants.accounts.service import issue_key
    from tenants.kit.db import unit_of_work

    with bench_environment(_LIMITS) as env:
        tenant_id, _ = make_agent(3, name="submit")
        with unit_of_work() as session:
            key = issue_key(session, tenant_id, "tenant-admin").plaintext
        port = _port()
        api = spawn(env, "api", "--port", str(port))
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base)
            _load(base, key, "submit", 3)  # warm-up: connections, caches, JIT-less Python paths
            figures = _load(base, key, "submit", SECONDS)
        finally:
            api.terminate()
            api.wait(timeout=30)
    return figures


def _embedded() -> dict[str, Any]:
    operator = f"mw_op_bench_{secrets.token_urlsafe(24)}"
    port = _port()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, **_LIMITS, "MIDWATCH_OPERATOR_KEY": operator, "MIDWATCH_DATA_DIR": data,
               "MIDWATCH_HEALTH_PORT": "0"}
        for name in ("MIDWATCH_DATABASE_URL", "MIDWATCH_BROKER_URL"):
            env.pop(name, None)
        up = subprocess.Popen([sys.executable, "-m", "midwatch.cli", "up", "--no-dashboard", "--port", str(port)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base)
            op = {"Authorization": f"Bearer {operator}"}
            key = httpx.post(f"{base}/v1/admin/tenants", json={"name": f"bench-{secrets.token_hex(3)}"},
                             headers=op).json()["admin_key"]["key"]
            spec = ("apiVersion: midwatch/v1\nname: submit\nscope: {tools: [sandbox.echo]}\nsteps:\n"
                    + "".join(f"  - {{id: s{i}, tool: sandbox.echo, args: {{i: {i}}}}}\n" for i in range(3)))
            r = httpx.put(f"{base}/v1/agents/submit", content=spec,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/yaml"})
            assert r.status_code == 201, r.text
            _load(base, key, "submit", 3)
            figures = _load(base, key, "submit", SECONDS)
        finally:
            up.terminate()
            up.wait(timeout=60)
    return figures


def main() -> None:
    from benchmarks._common import write_result

    pg = _postgres()
    print(f"api_submit (PostgreSQL + Redis, `midwatch api` with one process per CPU = {len(os.sched_getaffinity(0))},"
          f" {CLIENTS} keep-alive clients, {SECONDS:.0f} s): {pg['req_per_s']:.0f} req/s, p50 {pg['p50_ms']:.1f} ms, "
          f"p99 {pg['p99_ms']:.1f} ms, {pg['errors']} errors (target >= 500 req/s, p99 < 100 ms)")
    embedded = _embedded()
    print(f"api_submit (embedded default, `midwatch up`: SQLite, worker threads executing the runs): "
          f"{embedded['req_per_s']:.0f} req/s, p50 {embedded['p50_ms']:.1f} ms, p99 {embedded['p99_ms']:.1f} ms, "
          f"{embedded['errors']} errors (target >= 200 req/s)")
    write_result("api_submit", {"postgres_redis": pg, "embedded": embedded, "clients": CLIENTS,
                                "seconds": SECONDS, "api_processes": len(os.sched_getaffinity(0))})


if __name__ == "__main__":
    main()
