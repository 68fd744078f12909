"""Carrying out one rehearsal: space, upstream, worker processes, platform faults, results.

The orchestrator runs in the process that asked (``midwatch rehearse``, or a worker executing the
``run_rehearsal`` actor for the API). It never runs the engine itself, so nothing of the rehearsal touches
its process's metrics, traces or broker: the engine runs in the rehearsal's own worker process
(:mod:`runner.rehearsal.worker`), which it starts, kills with ``kill -9`` at the seeded moment, and starts
again. It reads the space's database, and writes nothing but the report (through the caller).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import RehearsalError
from runner.rehearsal.faults import Schedule
from runner.rehearsal.plan import Group, Plan, Source, build_plan, groups_of, side_effect_tools
from runner.rehearsal.profile import Profile
from runner.rehearsal.samples import make_items
from runner.rehearsal.upstream import RehearsalUpstream, Served
from tenants.kit.ids import new_id
from tenants.kit.settings import Settings
from tenants.rehearsals.repository import SpaceRepository
from tenants.rehearsals.space import SpaceDatabase, SpaceRun, drop_orphan_schemas, space_runs

__all__ = ["Observed", "RehearsalOptions", "carry_out", "worker_env"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "escalated", "budget_exhausted"})
READY_TIMEOUT_S = 60.0
POLL_S = 0.05
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RehearsalOptions:
    """How to rehearse: the profile, how many items, how many repetitions, the seed, a time limit, and (from
    the command line only, against a database the operator named disposable) a command restarting it."""

    profile: Profile
    items: int = 20
    repeat: int = 3
    seed: int = 1
    timeout_s: float = 300.0
    restart_database: list[str] | None = None


@dataclass
class Platform:
    """What happened to the rehearsal's own worker, queue and database, with timings."""

    kill: Served | None = None
    killed_at: float | None = None  # wall clock
    killed_run: str | None = None
    replacement_ready_s: float | None = None
    recovery_s: float | None = None
    queue: str | None = None
    dropped_messages: int | None = None
    db_restart: dict[str, Any] | None = None
    worker_starts: int = 0


@dataclass
class Observed:
    """Everything the report is computed from."""

    rehearsal_id: str
    source: Source
    options: RehearsalOptions
    plan: Plan
    schedule: Schedule
    runs: list[SpaceRun]
    states: dict[str, Any]  # run id -> Run
    items: list[Any]  # RunItem rows
    step_events: list[Any]  # DecisionEvent rows
    deferrals: list[Any]  # step.deferred events
    approvals: list[Any]
    side_effects: list[Any]
    served: list[Served]
    raw_requests: list[Any]
    egress: list[dict[str, Any]]
    platform: Platform
    port_labels: dict[int, str] = field(default_factory=dict)  # upstream port -> the host it stands for
    timings: dict[str, float] = field(default_factory=dict)


def worker_env(settings: Settings, space_dir: Path, space: SpaceDatabase, rehearsal_id: str) -> dict[str, str]:
    """The rehearsal worker's environment: the space and nothing of the installation's secrets, metrics or traces."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MIDWATCH_", "OTEL_")) and k not in ("PROMETHEUS_MULTIPROC_DIR",)}
    redis = settings.broker_url.startswith(("redis://", "rediss://"))
    env.update({
        "MIDWATCH_ENV": "embedded", "MIDWATCH_DATA_DIR": str(space_dir), "MIDWATCH_DATABASE_URL": space.url,
        "MIDWATCH_BROKER_URL": settings.broker_url if redis else "stub://",
        "MIDWATCH_QUEUE_NAME": f"rehearsal-{rehearsal_id}", "MIDWATCH_REDIS_NAMESPACE": f"mw-rehearsal-{rehearsal_id}",
        "MIDWATCH_ALLOW_LOOPBACK_EGRESS": "true", "MIDWATCH_HEALTH_PORT": "0", "MIDWATCH_WORKER_THREADS": "1",
        "MIDWATCH_METRICS_DB_GAUGES": "off", "MIDWATCH_LOG_FORMAT": "json", "MIDWATCH_LOG_LEVEL": "warning",
        # A key of its own that nothing is encrypted with: the space never sees the installation's master key.
        "MIDWATCH_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        # The platform behaves as the installation does: recovery figures are the installation's.
        "MIDWATCH_LEASE_SECONDS": str(settings.lease_seconds),
        "MIDWATCH_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
        "MIDWATCH_WAKE_GRACE_SECONDS": str(settings.wake_grace_seconds),
        "MIDWATCH_TIME_SLICE_SECONDS": str(settings.time_slice_seconds),
        "MIDWATCH_MAX_REDELIVERIES": str(settings.max_redeliveries),
        "MIDWATCH_DURABILITY": settings.durability,
    })
    return env


class _Worker:
    """One of the rehearsal's worker processes."""

    def __init__(self, space_dir: Path, env: dict[str, str], number: int) -> None:
        self.log_path = space_dir / f"worker-{number}.log"
        self.space_dir = space_dir
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter and a module of ours
                [sys.executable, "-m", "runner.rehearsal.worker", str(space_dir)], env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float) -> str:
        ready = self.space_dir / f"ready-{self.proc.pid}"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RehearsalError(f"the rehearsal's worker exited ({self.proc.returncode}) before it was ready: "
                                     f"{self.tail()}")
            if time.monotonic() > deadline:
                raise RehearsalError(f"the rehearsal's worker was not ready after {timeout:.0f}s: {self.tail()}")
            time.sleep(0.02)
        return ready.read_text(encoding="utf-8")

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.kill9()


def _redis_queue(settings: Settings, rehearsal_id: str, *, delete: bool) -> int:
    """Messages waiting in the rehearsal's own Redis namespace; with ``delete`` the namespace's keys go."""
    import redis

    client = redis.Redis.from_url(settings.broker_url)
    namespace = f"mw-rehearsal-{rehearsal_id}"
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        waiting = sum(int(client.hlen(k)) for k in keys if k.decode().endswith(".msgs"))
        if delete and keys:
            client.delete(*keys)
        return waiting
    finally:
        client.close()


def carry_out(settings: Settings, source: Source, options: RehearsalOptions, *, rehearsal_id: str | None = None,
              progress: Progress | None = None, heartbeat: Callable[[], None] | None = None) -> Observed:
    """Rehearse ``source`` in a throwaway space and return what was observed (see the module docstring).

    Raises RehearsalError when the rehearsal cannot be carried out. Cleans up in every case.
    """
    return _Rehearsal(settings, source, options, rehearsal_id or new_id("rhr"), progress, heartbeat).run()


class _Rehearsal:
    """One rehearsal being carried out: the space, the upstream, the worker processes."""

    def __init__(self, settings: Settings, source: Source, options: RehearsalOptions, rid: str,
                 progress: Progress | None, heartbeat: Callable[[], None] | None) -> None:
        self.settings, self.source, self.options, self.rid = settings, source, options, rid
        self.say: Progress = progress or (lambda _m: None)
        self.heartbeat = heartbeat
        self.began = time.monotonic()
        self.schedule = Schedule(options.seed, options.profile, source.spec, items=options.items,
                                 repeat=options.repeat, side_effects=side_effect_tools(source))
        self.triggered = threading.Event()
        self.upstream = RehearsalUpstream(self.schedule, source.spec, groups_of(source), seed=options.seed,
                                          on_trigger=lambda _e: self.triggered.set())
        self.space_dir = Path(tempfile.mkdtemp(prefix="midwatch-rehearsal-"))
        self.space: SpaceDatabase | None = None
        self.workers: list[_Worker] = []
        self.redis = settings.broker_url.startswith(("redis://", "rediss://"))
        self.platform = Platform(worker_starts=1)
        self.timings: dict[str, float] = {}
        self.env: dict[str, str] = {}
        self.tenant_id = ""
        self.runs: list[SpaceRun] = []

    def run(self) -> Observed:
        try:
            ports, plan = self._prepare()
            self._watch(time.time() + self.options.timeout_s - self.timings["space_ready_s"])
            self.timings["runs_s"] = time.monotonic() - self.began - self.timings["space_ready_s"]
            self.workers[-1].stop()
            observed = self._collect(ports, plan)
            observed.timings["total_s"] = time.monotonic() - self.began
            return observed
        finally:
            self._clean_up()

    def _prepare(self) -> tuple[dict[Group, int], Plan]:
        options = self.options
        _reap_leftovers(self.settings, self.say)
        ports = self.upstream.start()
        plan = build_plan(self.source, ports, rehearsal_id=self.rid,
                          items=make_items(self.source, options.items, options.seed), repeat=options.repeat,
                          approvals=options.profile.approvals, deadline=time.time() + options.timeout_s + 60)
        self.upstream.configure(plan)
        (self.space_dir / "plan.json").write_text(plan.to_json(), encoding="utf-8")
        self.space = SpaceDatabase.sqlite(self.space_dir) if self.settings.is_sqlite else SpaceDatabase.postgres(
            self.settings.database_url, self.rid)
        self.env = worker_env(self.settings, self.space_dir, self.space, self.rid)
        self.workers.append(_Worker(self.space_dir, self.env, 1))
        self.tenant_id = self.workers[0].wait_ready(READY_TIMEOUT_S)
        self.timings["space_ready_s"] = time.monotonic() - self.began
        self.say(f"rehearsal space ready in {self.timings['space_ready_s']:.1f}s: {len(plan.runs)} run(s) of "
                 f"{options.items} item(s) x {options.repeat}, profile {options.profile.name}, seed {options.seed}")
        with self.space.read() as session:
            self.runs = space_runs(self.tenant_id, session)
        return ports, plan

    def _watch(self, deadline: float) -> None:
        """Until every run has ended (and the killed one progressed again): platform faults, recovery, time."""
        assert self.space is not None
        platform = self.platform
        last_beat = time.monotonic()
        while True:
            if self.triggered.is_set() and platform.kill is None:
                platform.kill = self.upstream.triggered
                self._platform_faults()
            if platform.killed_at is not None and platform.recovery_s is None and platform.killed_run:
                with self.space.read() as session:
                    at = SpaceRepository(session, self.tenant_id).first_progress_after(
                        platform.killed_run, datetime.fromtimestamp(platform.killed_at, UTC))
                if at is not None:
                    platform.recovery_s = max(0.0, at.timestamp() - platform.killed_at)
                    self.say(f"the killed run progressed again {platform.recovery_s:.1f}s after the kill")
            with self.space.read() as session:
                states = SpaceRepository(session, self.tenant_id).states()
            recovered = platform.killed_at is None or platform.recovery_s is not None or platform.killed_run is None
            if states and recovered and all(s in TERMINAL for s in states.values()):
                return
            worker = self.workers[-1]
            if worker.proc.poll() is not None:
                raise RehearsalError(f"the rehearsal's worker stopped unexpectedly ({worker.proc.returncode}): "
                                     f"{worker.tail()}")
            if time.time() > deadline:
                done = sum(1 for s in states.values() if s in TERMINAL)
                raise RehearsalError(f"the rehearsal did not finish within {self.options.timeout_s:.0f}s ({done} of "
                                     f"{len(states)} runs finished); raise --timeout or rehearse fewer items")
            if self.heartbeat is not None and time.monotonic() - last_beat > 10:
                self.heartbeat()
                last_beat = time.monotonic()
            time.sleep(POLL_S)

    def _collect(self, ports: dict[Group, int], plan: Plan) -> Observed:
        assert self.space is not None
        with self.space.read() as session:
            repo = SpaceRepository(session, self.tenant_id)
            observed = Observed(
                rehearsal_id=self.rid, source=self.source, options=self.options, plan=plan, schedule=self.schedule,
                runs=self.runs, states={r.id: r for r in repo.runs()}, items=list(repo.items()),
                step_events=list(repo.step_events()), deferrals=list(repo.deferrals()),
                approvals=list(repo.approvals()), side_effects=list(repo.side_effects()),
                served=list(self.upstream.served), raw_requests=self.upstream.requests,
                egress=_egress(self.space_dir), platform=self.platform, timings=dict(self.timings),
                port_labels={p: _label(g) for g, p in ports.items()})
            session.expunge_all()
        return observed

    def _clean_up(self) -> None:
        for worker in self.workers:
            try:
                worker.stop()
            except Exception:  # cleaning up: the next one still has to go
                worker.kill9()
        self.upstream.stop()
        if self.space is not None:
            self.space.drop()
        if self.redis:
            try:
                _redis_queue(self.settings, self.rid, delete=True)
            except Exception:  # the namespace is unique to this rehearsal: left-overs harm nobody
                self.say("could not delete the rehearsal's Redis keys")
        shutil.rmtree(self.space_dir, ignore_errors=True)

    def _platform_faults(self) -> None:
        """At the seeded moment: kill -9 the worker (a call in flight), drop its queue, start a new one."""
        profile, platform, workers = self.options.profile, self.platform, self.workers
        hit = platform.kill
        assert hit is not None
        if profile.platform.kill_worker:
            workers[-1].kill9()
            platform.killed_at = time.time()
            batch = len(self.runs) == self.options.repeat  # one run per repetition; else one run per item
            match = [r for r in self.runs if r.rep == hit.rep and (batch or r.offset == hit.item)]
            platform.killed_run = match[0].run_id if match else None
            self.say(f"kill -9 of the rehearsal's worker in repetition {hit.rep}, item {hit.item}, step {hit.step} "
                     f"({hit.target} in flight)")
        if profile.platform.drop_queue:
            if self.redis:
                platform.dropped_messages = _redis_queue(self.settings, self.rid, delete=True)
                platform.queue = "dropped: every message of the rehearsal's Redis queue deleted"
            elif profile.platform.kill_worker:
                platform.queue = "dropped: the in-process queue died with the worker"
            else:
                os.kill(workers[-1].proc.pid, signal.SIGUSR1)
                platform.queue = "dropped: the worker's in-process queue flushed"
        if self.options.restart_database:
            started = time.monotonic()
            result = subprocess.run(self.options.restart_database, capture_output=True, timeout=300,  # noqa: S603
                                    check=False)
            platform.db_restart = {"command": " ".join(self.options.restart_database),
                                   "exit_code": result.returncode, "duration_s": round(time.monotonic() - started, 3)}
            self.say(f"database restart command exited {result.returncode} after "
                     f"{platform.db_restart['duration_s']}s")
        if profile.platform.kill_worker:
            before = time.monotonic()
            workers.append(_Worker(self.space_dir, self.env, len(workers) + 1))
            workers[-1].wait_ready(READY_TIMEOUT_S)
            platform.worker_starts += 1
            platform.replacement_ready_s = time.monotonic() - before


LEFTOVER_AGE_S = 3600.0  # no live rehearsal lasts this long: older spaces were left by a process that died


def _reap_leftovers(settings: Settings, say: Progress) -> None:
    """Remove spaces of rehearsals whose orchestrator died (best effort: a failure here never stops one)."""
    try:
        horizon = time.time() - LEFTOVER_AGE_S
        for path in Path(tempfile.gettempdir()).glob("midwatch-rehearsal-*"):
            if path.is_dir() and path.stat().st_mtime < horizon:
                shutil.rmtree(path, ignore_errors=True)
        if not settings.is_sqlite:
            dropped = drop_orphan_schemas(settings.database_url, older_than_s=LEFTOVER_AGE_S)
            if dropped:
                say(f"dropped {dropped} rehearsal schema(s) left by rehearsals whose process died")
    except Exception:  # cleaning up others' leftovers must not fail this rehearsal
        say("could not look for leftovers of earlier rehearsals")


def _label(group: Group) -> str:
    """How a port is shown in reasons: the host it stands for (``api.example.com``), ``built-in``, ``model:alias``."""
    if group.kind == "host":
        return group.name.removesuffix(":443").removesuffix(":80")
    return "built-in" if group.kind == "builtin" else f"model:{group.name}"


def _egress(space_dir: Path) -> list[dict[str, Any]]:
    path = space_dir / "egress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
