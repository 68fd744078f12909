"""The rehearsal's own worker process: ``python -m runner.rehearsal.worker SPACE_DIR``.

Started (and killed with ``kill -9``, and started again) by the orchestrator with the space as its whole
world: ``MIDWATCH_DATABASE_URL`` is the space's database, the broker is its own (an in-process queue, or a
Redis namespace and queue of its own), there is no master key and no keyring. It then:

1. pins egress (:class:`RehearsalGuard`): every outbound hop must go to one of the rehearsal upstream's
   ports, or it is refused; each hop is written to ``egress.jsonl`` (allowed or refused), and gets the
   context header (repetition, item, step) from the work context the engine binds;
2. resolves secrets to the plan's fakes only (a name the tenant does not have stays missing);
3. lets the HTTP stand-ins replace the built-in ``sandbox.echo`` / ``sandbox.record`` in this process;
4. creates and fills the space on its first start (:func:`tenants.rehearsals.space.prepare`);
5. runs the real engine: Dramatiq worker threads, the sweeper, and a scripted human who answers
   approval requests; it writes ``ready-<pid>`` once it works, and exits when its parent goes away, when
   the plan's deadline passes, or on SIGTERM. SIGUSR1 drops its queue's messages.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from runner.rehearsal.plan import Plan
from runner.rehearsal.upstream import CONTEXT_HEADER, format_context
from runner.tools.egress import EgressBlocked
from tenants.kit.logging import bound_work
from tenants.rehearsals.space import SpaceRun

if TYPE_CHECKING:
    import dramatiq

    from tenants.kit.settings import Settings

__all__ = ["RehearsalGuard", "main"]


class RehearsalGuard:
    """Egress pinned to the rehearsal upstream, every hop logged (see the module docstring)."""

    def __init__(self, allowed: list[str], log_path: Path, runs: dict[str, SpaceRun]) -> None:
        self.allowed = frozenset(allowed)
        self.log_path = log_path
        self.runs = runs
        self._lock = threading.Lock()

    def check(self, scheme: str, host: str, port: int, url: str) -> None:
        netloc = f"{host}:{port}"
        allowed = scheme == "http" and netloc in self.allowed
        with self._lock, self.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps({"host": host, "port": port, "scheme": scheme, "allowed": allowed,
                                  "at": time.time()}) + "\n")
        if not allowed:
            raise EgressBlocked(f"egress blocked: the rehearsal may reach only its fault-injecting upstream, not "
                                f"{scheme}://{netloc}", url=url, host=host)

    def headers(self) -> Mapping[str, str]:
        bound = bound_work()
        run = self.runs.get(str(bound.get("run_id", "")))
        if run is None:
            return {}
        item = run.offset + int(bound.get("item", 0) or 0)
        return {CONTEXT_HEADER: format_context(run.rep, item, str(bound.get("step", "?")))}


def _fake_secrets(values: dict[str, str]) -> Any:
    def lookup(_tenant_id: str, name: str) -> str:
        try:
            return values[name]
        except KeyError:
            raise LookupError(f"secret {name!r} is not set for this tenant") from None

    return lookup


def _watch(parent: int, deadline: float) -> None:
    """Exit when the orchestrator is gone or the rehearsal's time is up (never outlive it)."""
    while True:
        if os.getppid() != parent or time.time() > deadline:
            os._exit(3)
        time.sleep(0.5)


def _approver(tenant_id: str, approve: bool, stop: threading.Event) -> None:
    from tenants.rehearsals.space import decide_pending

    while not stop.wait(0.2):
        try:
            decide_pending(tenant_id, approve=approve)
        except Exception:  # an approval that expired or was decided meanwhile: look again next tick
            structlog.get_logger("rehearsal").debug("approver_retry", exc_info=True)


def _prepare(plan: Plan, space: Path, settings: Settings) -> tuple[dramatiq.Broker, str]:
    """Pin this process to the space (stand-ins, fake secrets, its broker, egress to the upstream only), then
    create and fill the space on a first start; the broker and the space's tenant id."""
    from runner.actors import register_actors
    from runner.broker import init_broker
    from runner.engine._registry import set_secret_lookup
    from runner.tools.egress import set_egress_guard
    from runner.tools.sandbox import BUILTIN_TOOLS
    from tenants.migrations import upgrade
    from tenants.rehearsals.space import prepare

    for name in plan.standins:
        BUILTIN_TOOLS.pop(name, None)
    set_secret_lookup(_fake_secrets(plan.secrets), None)
    broker = init_broker(settings, register_actors)
    runs: dict[str, SpaceRun] = {}
    set_egress_guard(RehearsalGuard(plan.allowed, space / "egress.jsonl", runs))
    upgrade()  # the production schema, by the same migrations (a no-op for a restarted worker)
    tenant_id, found = prepare(agent_name=plan.agent_name, spec=plan.spec, tools=plan.tools, models=plan.models,
                               runs=plan.runs)
    runs.update({r.run_id: r for r in found})
    return broker, tenant_id


def _handle_signals(broker: dramatiq.Broker, space: Path, stop: threading.Event) -> None:
    """SIGUSR1 drops the queue's messages (their count written to ``dropped-<pid>``); SIGTERM and SIGINT stop."""

    def drop_queue(*_: Any) -> None:
        count = sum(len(q.queue) for q in getattr(broker, "queues", {}).values()
                    if hasattr(q, "queue"))  # the stub broker's in-process queues
        broker.flush_all()
        (space / f"dropped-{os.getpid()}").write_text(str(count))

    signal.signal(signal.SIGUSR1, drop_queue)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def _mark_ready(space: Path, tenant_id: str) -> None:
    """Write ``ready-<pid>`` (holding the tenant id) at once, for the orchestrator waiting on it."""
    ready = space / f"ready-{os.getpid()}"
    ready.with_suffix(".tmp").write_text(tenant_id)
    ready.with_suffix(".tmp").rename(ready)


def main(argv: list[str] | None = None) -> int:
    """Run the rehearsal's worker until SIGTERM (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    space = Path(args[0])
    plan = Plan.from_json((space / "plan.json").read_text(encoding="utf-8"))
    threading.Thread(target=_watch, args=(os.getppid(), plan.deadline), daemon=True, name="watchdog").start()

    import dramatiq

    from runner.engine._run import request_stop
    from runner.sweeper import run_sweeper
    from tenants.kit.logging import configure_logging
    from tenants.kit.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, "json")
    broker, tenant_id = _prepare(plan, space, settings)
    stop = threading.Event()
    _handle_signals(broker, space, stop)
    worker = dramatiq.Worker(broker, queues={settings.queue_name}, worker_threads=plan.worker_threads,
                             worker_timeout=100)
    worker.start()
    sweeper_stop = threading.Event()
    threading.Thread(target=run_sweeper, args=(settings, sweeper_stop), daemon=True, name="sweeper").start()
    threading.Thread(target=_approver, args=(tenant_id, plan.approvals == "approve", stop), daemon=True,
                     name="approver").start()
    _mark_ready(space, tenant_id)
    stop.wait()
    request_stop()
    sweeper_stop.set()
    worker.stop(timeout=5000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
