"""The 3 a.m. rehearsal: run an agent's version through a seeded bad night, and report whether it survives.

The rehearsal space
-------------------
A rehearsal never runs in the installation. It builds a throwaway *space* and runs the agent there:

- **its own database**: a fresh SQLite file in a temporary directory on the embedded default, a throwaway
  schema (``mw_rehearsal_<id>``, reached through ``search_path``) on PostgreSQL
  (:mod:`tenants.rehearsals.space`). It holds one tenant with a copy of the agent's version, its tools and
  its models. Nothing the rehearsal does lands in the installation's runs, read models, reliability
  figures, budgets, audit trail or webhooks; only the report does (``rehearsals``).
- **its own worker process** (:mod:`runner.rehearsal.worker`), started by the rehearsal with the space as
  its whole world: one worker thread (so the schedule, not thread timing, decides what happens), the
  sweeper, its own queue (in-process on the embedded default, a Redis namespace and queue of its own with
  a Redis broker), a secrets master key of its own that encrypts nothing, no metrics exported, no traces
  sent. This is the process the rehearsal kills with ``kill -9``.
- **one upstream** (:mod:`runner.rehearsal.upstream`): the fault-injecting upstream, on one loopback port
  per original API host (each keeps its own circuit breaker), per model alias, and for the HTTP stand-ins
  of the built-in ``sandbox.echo`` / ``sandbox.record``. Tool URLs (and OAuth token URLs) are rewritten
  to it, every model alias is played by the sandbox model's scripted turns in the alias's wire format,
  and secrets are fakes (a secret the tenant does not have stays missing, as in production). The worker's
  egress is pinned to those ports at the egress layer (:class:`runner.rehearsal.worker.RehearsalGuard`),
  and every hop is logged, so a rehearsal cannot reach a real API, whatever a tool or a redirect says.

Faults follow a schedule that is a pure function of the seed (:mod:`runner.rehearsal.faults`); the
profile (:mod:`runner.rehearsal.profile`) sets the rates. The report (:mod:`runner.rehearsal.report`) is
computed from the space's decision log and the upstream's ledger (its suggested changes by
:mod:`runner.rehearsal.advice`, its terminal table by :mod:`runner.rehearsal.table`); the space and the
upstream are gone when :func:`rehearse` returns (also after an error).

Public interface: :func:`rehearse` (carry out and report), :func:`run_requested` (the ``run_rehearsal``
actor's body: a rehearsal requested through the API), :class:`RehearsalOptions`, :func:`load_profile`,
:func:`load_file`, :func:`source_from_agent`, :func:`render_table`.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

import dramatiq

from runner.broker import actor_options
from runner.errors import RehearsalError, RunnerError, SpecInvalid
from runner.rehearsal.orchestrate import RehearsalOptions, carry_out
from runner.rehearsal.plan import Source, complete_from_tenant, load_file, source_from_agent
from runner.rehearsal.profile import BUILTIN, Profile, load_profile, profile_from
from runner.rehearsal.report import build_report, headline, profile_label
from runner.rehearsal.table import render_table
from tenants.kit.db import unit_of_work
from tenants.kit.errors import MidwatchError, public_reason
from tenants.kit.logging import get_logger
from tenants.kit.settings import Settings
from tenants.rehearsals.service import REHEARSE

__all__ = [
    "BUILTIN",
    "Profile",
    "RehearsalError",
    "RehearsalOptions",
    "Source",
    "complete_from_tenant",
    "headline",
    "load_file",
    "load_profile",
    "profile_from",
    "profile_label",
    "register_rehearsal_actor",
    "rehearse",
    "render_table",
    "run_requested",
    "source_from_agent",
]

log = get_logger("rehearsal")


def rehearse(settings: Settings, source: Source, options: RehearsalOptions, *, rehearsal_id: str | None = None,
             progress: Callable[[str], None] | None = None,
             heartbeat: Callable[[], None] | None = None) -> dict[str, Any]:
    """Rehearse ``source`` and return the report (a JSON-ready dict). Raises RehearsalError when it cannot be
    carried out (what to fix is in the message)."""
    observed = carry_out(settings, source, options, rehearsal_id=rehearsal_id, progress=progress,
                         heartbeat=heartbeat)
    return build_report(observed)


_SLOT = threading.Semaphore(1)  # one rehearsal at a time per process: each starts a worker process of its own
BUSY_RETRY_S = 15.0


def run_requested(settings: Settings, tenant_id: str, rehearsal_id: str) -> None:
    """Carry out a rehearsal requested through the API (``POST /v1/agents/{name}/rehearsals``) and store its
    report, or why it could not be carried out. A rehearsal already taken or finished is left alone; while this
    process carries out another one, the request is woken again later."""
    if not _SLOT.acquire(blocking=False):
        from tenants.kit.db import dispatch_after_commit
        from tenants.rehearsals.service import REHEARSE

        dispatch_after_commit(REHEARSE, {"tenant_id": tenant_id, "rehearsal_id": rehearsal_id}, BUSY_RETRY_S)
        return
    try:
        _run_requested(settings, tenant_id, rehearsal_id)
    finally:
        _SLOT.release()


def _run_requested(settings: Settings, tenant_id: str, rehearsal_id: str) -> None:
    from tenants.rehearsals.service import fail_rehearsal, finish_rehearsal, start_rehearsal, touch_rehearsal

    with unit_of_work() as session:
        row = start_rehearsal(session, tenant_id, rehearsal_id)
        if row is None:
            return
        fields = {"agent": row.agent_name, "version": row.agent_version, "profile": row.profile,
                  "options": row.options, "seed": int(row.seed), "items": row.items, "repeat": row.repeat}
        from tenants.accounts.repository import AccountsPlatformRepository

        tenant = AccountsPlatformRepository(session).tenant(tenant_id)
        tenant_name = tenant.name if tenant is not None else ""

    def beat() -> None:
        with unit_of_work() as s:
            touch_rehearsal(s, tenant_id, rehearsal_id)

    try:
        profile = profile_from(fields["options"]) if fields["options"] else BUILTIN[str(fields["profile"])]
        source = source_from_agent(tenant_name, str(fields["agent"]), int(fields["version"] or 0) or None)
        options = RehearsalOptions(profile=profile, items=int(fields["items"]), repeat=int(fields["repeat"]),
                                   seed=int(fields["seed"]),
                                   timeout_s=max(60.0, min(settings.actor_time_limit_s - 60, 900.0)))
        report = rehearse(settings, source, options, rehearsal_id=rehearsal_id, heartbeat=beat)
    except (RunnerError, MidwatchError) as exc:
        message = str(exc) if not isinstance(exc, SpecInvalid) else f"the profile is invalid: {exc}"
        log.warning("rehearsal_failed", rehearsal_id=rehearsal_id, error=message)
        with unit_of_work() as session:
            fail_rehearsal(session, tenant_id, rehearsal_id, message)
        return
    except Exception as exc:  # a bug: say so on the record, loudly in the log, never retry a rehearsal
        log.error("rehearsal_crashed", rehearsal_id=rehearsal_id, error=traceback.format_exc())
        with unit_of_work() as session:
            fail_rehearsal(session, tenant_id, rehearsal_id, f"internal error: {public_reason(exc)}")
        return
    with unit_of_work() as session:
        finish_rehearsal(session, tenant_id, rehearsal_id, report, headline(report))


def register_rehearsal_actor(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare the ``run_rehearsal`` actor (API-requested rehearsals) on ``broker``: carried out once, a failure
    is recorded on the rehearsal (state ``error``), never retried by the broker."""
    def _run_rehearsal(tenant_id: str = "", rehearsal_id: str = "") -> None:
        run_requested(settings, tenant_id, rehearsal_id)

    dramatiq.actor(actor_name=REHEARSE, queue_name=settings.queue_name, broker=broker,
                   **{**actor_options(settings), "max_retries": 0})(_run_rehearsal)
