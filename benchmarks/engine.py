"""Engine benchmarks (docs/BENCHMARKS.md): step_latency, throughput, overhead, recovery, batch_memory.

Each prints its figure beside the peer measured in the same run (DBOS Transact from
``../shared/peers``, plain Dramatiq from :mod:`benchmarks.plain_dramatiq`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from benchmarks._common import ROOT, bench_environment, make_agent, median, run_peer, spawn, write_result


def _submit(tenant_id: str, version: Any, count: int, *, items: list[Any] | None = None) -> list[str]:
    from tenants.kit.db import unit_of_work
    from tenants.runs.service import submit_run

    ids = []
    with unit_of_work() as session:
        for _ in range(count):
            ids.append(submit_run(session, tenant_id, version, "bench", None, items, None).run.id)
    return ids


def _states() -> dict[str, int]:
    from tenants.kit.db import unit_of_work
    from tenants.runs.repository import PlatformRunRepository

    with unit_of_work() as session:
        return PlatformRunRepository(session).counts_by_state()


def _run(tenant_id: str, run_id: str) -> Any:
    from tenants.kit.db import unit_of_work
    from tenants.runs.service import get_run

    with unit_of_work() as session:
        return get_run(session, tenant_id, run_id)


def commit_floor(samples: int = 300) -> float:
    """The durable one-row PostgreSQL commit on this machine, measured now: median ms of INSERT + COMMIT."""
    import psycopg

    from benchmarks._common import PG_URL

    times = []
    with psycopg.connect(PG_URL) as conn:
        conn.execute("CREATE TEMP TABLE floor_probe (id int)")
        conn.execute("SET synchronous_commit = on")  # what a durable step waits for
        for i in range(samples):
            started = time.perf_counter()
            conn.execute("INSERT INTO floor_probe VALUES (%s)", (i,))
            conn.commit()
            times.append((time.perf_counter() - started) * 1000)
    return median(times)


def _ms_per_step(tenant_id: str, version: Any, settings: Any, *, floors: bool = False
                 ) -> tuple[list[float], list[float]]:
    """Five runs of 100 steps (after a warm-up): ms per step each, and with ``floors`` the durable commit
    measured just before each of them (a disk's flush time drifts over seconds: 0.3 to 1.5 ms on one machine
    within minutes), so the ratio compares figures taken at the same time."""
    from runner.actors import run_once

    samples, floor_samples = [], []
    for n in range(6):  # the first is a warm-up
        if floors and n:
            floor_samples.append(commit_floor(60))
        (run_id,) = _submit(tenant_id, version, 1, items=[{"n": 0}, {"n": 1}])
        started = time.perf_counter()
        assert run_once(settings)
        samples.append((time.perf_counter() - started) / 100 * 1000)
        assert _run(tenant_id, run_id).state == "succeeded"
    return samples[1:], floor_samples


def step_latency() -> dict[str, Any]:
    """One run of 100 no-op checkpointed steps, sequential, on PostgreSQL: ms per step, median of 5, with the
    default durability (pure steps skip the WAL flush wait) and with every step fully durable; beside them
    the durable one-row commit, measured before each of the durable runs (median). A spec holds at most
    50 steps, so the run is 2 items x 50 steps. The run's claim and its end are inside the figure."""
    from tenants.kit.settings import get_settings

    with bench_environment():
        tenant_id, version = make_agent(50, items=True)
        relaxed_samples = _ms_per_step(tenant_id, version, get_settings())[0]
        relaxed = median(relaxed_samples)
        strict_samples, floors = _ms_per_step(
            tenant_id, version, get_settings().model_copy(update={"durability": "strict"}), floors=True)
        strict, floor = median(strict_samples), median(floors)
    peer_out = run_peer("dbos_steps.py", "100", "5")
    peer = float(re.search(r"median ([\d.]+) ms", peer_out).group(1)) if peer_out else None  # type: ignore[union-attr]
    ratio = f"{peer / relaxed:.1f}x faster than DBOS ({peer:.3f} ms/step)" if peer else "DBOS peer not measured"
    print(f"step_latency: {relaxed:.3f} ms per checkpointed step (default durability: pure steps do not wait for "
          f"the WAL flush; median of 5 x 100 steps, PostgreSQL); {ratio}")
    versus = f"; {peer / strict:.1f}x faster than DBOS" if peer else ""
    print(f"step_latency (every step fully durable): {strict:.3f} ms per step = {strict / floor:.2f}x the durable "
          f"one-row commit measured beside it ({floor:.3f} ms){versus}")
    return {"ms_per_step": relaxed, "ms_per_step_samples": relaxed_samples, "ms_per_step_durable": strict,
            "ms_per_step_durable_samples": strict_samples, "commit_floor_ms": floor, "commit_floor_samples": floors,
            "durable_over_floor": strict / floor, "dbos_ms_per_step": peer,
            "ratio_vs_dbos": peer / relaxed if peer else None,
            "durable_ratio_vs_dbos": peer / strict if peer else None}


def _wait_all(total: int, timeout: float = 600) -> float:
    started = time.perf_counter()
    while True:
        states = _states()
        if states.get("succeeded", 0) >= total:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"only {states} after {timeout}s")
        time.sleep(0.05)


def throughput(runs: int = 1000, steps: int = 5) -> dict[str, Any]:
    """1,000 runs x 5 no-op steps submitted at once, PostgreSQL + Redis, 2 worker processes: runs/s."""
    with bench_environment({"MIDWATCH_WORKER_THREADS": "8"}) as env:
        tenant_id, version = make_agent(steps)
        workers = [spawn(env, "worker") for _ in range(2)]
        try:
            time.sleep(4)  # workers import and connect
            started = time.perf_counter()
            _submit(tenant_id, version, runs)
            _wait_all(runs)
            elapsed = time.perf_counter() - started
        finally:
            for w in workers:
                w.terminate()
                w.wait(timeout=30)
    ours = runs / elapsed
    peer_out = run_peer("dbos_start.py", str(runs), str(steps))
    match = re.search(r"-> (\d+) workflows/s", peer_out or "")
    peer = float(match.group(1)) if match else None
    ratio = f"{ours / peer:.1f}x DBOS ({peer:.0f} workflows/s)" if peer else "DBOS peer not measured"
    print(f"throughput: {ours:.0f} runs/s ({runs} runs x {steps} steps, 2 workers, PostgreSQL + Redis); {ratio}")
    return {"runs_per_s": ours, "elapsed_s": elapsed, "dbos_workflows_per_s": peer,
            "ratio_vs_dbos": ours / peer if peer else None}


def overhead(runs: int = 1000, steps: int = 5) -> dict[str, Any]:
    """Midwatch's 1,000 x 5 against the same work through plain Dramatiq actors with no checkpoints."""
    ours = throughput(runs, steps)
    import redis

    from benchmarks._common import REDIS_URL

    tag = f"plain-{os.getpid()}"
    os.environ.update({"PLAIN_BENCH_TAG": tag, "PLAIN_BENCH_REDIS": REDIS_URL})  # read at import, here and there
    env = dict(os.environ)
    worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "benchmarks.plain_dramatiq", "--processes", "2",
                               "--threads", "8", "--queues", tag], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        time.sleep(4)
        client.delete(f"{tag}:done")
        from benchmarks.plain_dramatiq import enqueue_all

        started = time.perf_counter()
        enqueue_all(runs, steps)
        deadline = time.perf_counter() + 600
        while int(client.get(f"{tag}:done") or 0) < runs:
            if time.perf_counter() > deadline:
                raise RuntimeError("plain Dramatiq baseline did not finish in 600 s")
            time.sleep(0.02)
        plain = time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        client.delete(f"{tag}:done")
    ratio = ours["elapsed_s"] / plain
    print(f"overhead: Midwatch {ours['elapsed_s']:.2f}s vs plain Dramatiq {plain:.2f}s for {runs} x {steps} "
          f"-> {ratio:.2f}x (target <= 8x; beyond: 4x)")
    return {"midwatch_s": ours["elapsed_s"], "plain_dramatiq_s": plain, "ratio": ratio}


def recovery(items: int = 500) -> dict[str, Any]:
    """kill -9 a worker in the middle of a 500-item run: seconds until the run progresses again; duplicates."""
    from tenants.kit.db import unit_of_work
    from tenants.runs.repository import RunRepository

    with bench_environment() as env:
        tenant_id, version = make_agent(3, items=True)
        scheduler = spawn(env, "scheduler")
        first = spawn(env, "worker")
        (run_id,) = _submit(tenant_id, version, 1, items=[{"n": i} for i in range(items)])
        while _run(tenant_id, run_id).items_done < items // 2:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        done_at_kill = _run(tenant_id, run_id).items_done
        second = spawn(env, "worker")
        while _run(tenant_id, run_id).items_done <= done_at_kill:
            time.sleep(0.01)
        recovered = time.perf_counter() - killed_at
        while _run(tenant_id, run_id).state != "succeeded":
            time.sleep(0.05)
        with unit_of_work() as session:
            events = RunRepository(session, tenant_id).events(run_id, after=None, limit=100_000)
            executed = sum(1 for e in events if e.kind == "step.succeeded")
        for proc in (second, scheduler):
            proc.terminate()
            proc.wait(timeout=30)
    duplicates = executed - items * 3
    print(f"recovery: {recovered:.2f}s from kill -9 to progress again (target < 5 s); {duplicates} duplicate steps")
    return {"seconds_to_progress": recovered, "duplicate_steps": duplicates}


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def batch_memory(items: int = 50_000) -> dict[str, Any]:
    """One run of 50,000 items x 3 steps: the worker's RSS at 5,000 items and at the end."""
    with bench_environment({"MIDWATCH_WORKER_THREADS": "2"}) as env:
        tenant_id, version = make_agent(3, items=True)
        worker = spawn(env, "worker")
        time.sleep(3)
        baseline = _rss_mb(worker.pid)
        (run_id,) = _submit(tenant_id, version, 1, items=[{"n": i, "note": "x" * 40} for i in range(items)])
        peak, at_5k = baseline, None
        started = time.perf_counter()
        while True:
            run = _run(tenant_id, run_id)
            rss = _rss_mb(worker.pid)
            peak = max(peak, rss)
            if at_5k is None and run.items_done >= 5_000:
                at_5k = rss
            if run.state not in {"running", "queued"}:
                break
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        final = _rss_mb(worker.pid)
        worker.terminate()
        worker.wait(timeout=30)
    growth = final / at_5k if at_5k else None
    print(f"batch_memory: {items} items x 3 steps in {elapsed:.0f}s; worker RSS {baseline:.0f} MB idle, "
          f"{at_5k or 0:.0f} MB at 5k, {final:.0f} MB at {items // 1000}k, peak {peak:.0f} MB "
          f"(target < 300 MB, 50k <= 1.2x 5k: {growth:.2f}x)")
    return {"state": run.state, "elapsed_s": elapsed, "rss_idle_mb": baseline, "rss_at_5k_mb": at_5k,
            "rss_final_mb": final, "rss_peak_mb": peak, "growth": growth}


BENCHMARKS = {
    "step_latency": step_latency,
    "throughput": throughput,
    "overhead": overhead,
    "recovery": recovery,
    "batch_memory": batch_memory,
}


def main(names: list[str]) -> None:
    for name in names:
        write_result(name, BENCHMARKS[name]())
