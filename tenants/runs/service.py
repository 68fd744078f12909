"""Rules for runs on the API side: submission (idempotent), cancel, resume. Never commits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tenants.accounts.models import Tenant
from tenants.accounts.service import KEYS, tenant_named
from tenants.agents.models import AgentVersion, VersionRef
from tenants.audit.seals import broken_marker, run_chain
from tenants.audit.seals import seal as seal_head
from tenants.budgets.service import charge_run
from tenants.kit import metrics
from tenants.kit.db import call_after_commit, enqueue_after_commit
from tenants.kit.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound, found
from tenants.kit.ids import new_id, sha256_hex, utcnow
from tenants.kit.settings import get_settings
from tenants.runs.events import GENESIS, HASHED_FIELDS, ChainVerdict, event_hash, verify_chain
from tenants.runs.models import TERMINAL_STATES, Run, RunItem
from tenants.runs.repository import RunRepository, run_repository

__all__ = [
    "DEFAULT_PRIORITY",
    "EXECUTE_RUN",
    "Submitted",
    "append_event",
    "cancel_run",
    "get_run",
    "list_escalations",
    "resolve_item",
    "resume_run",
    "set_tenant_status",
    "submit_run",
    "verify_run_log",
    "wake_grace",
]

EXECUTE_RUN = "execute_run"  # the runner's actor, enqueued by name after commit
WAKEUPS_PER_COMMIT = 64  # workers keep claiming while runs are due: a few wake-ups drain a transaction's runs
DEFAULT_PRIORITY = 3  # 1 (most urgent) .. 5; orders runs within their tenant only


def wake_grace() -> timedelta:
    """How long a wake-up may go unanswered before the sweeper re-sends it (``MIDWATCH_WAKE_GRACE_SECONDS``)."""
    return timedelta(seconds=get_settings().wake_grace_seconds)


@dataclass(frozen=True, slots=True)
class Submitted:
    run: Run
    created: bool


def submit_run(session: Session, tenant_id: str, version: AgentVersion | VersionRef, agent_name: str, run_input: Any,
               items: Sequence[Any] | None, idempotency_key: str | None,
               priority: int = DEFAULT_PRIORITY) -> Submitted:
    """Insert a run (and its items) once per Idempotency-Key, charge the runs-per-period budget if one
    applies, and wake a worker after commit. The run row and its decision log are the run's record."""
    if not 1 <= priority <= 5:
        raise InvalidInput("priority must be between 1 (most urgent) and 5", field="priority")
    repo = run_repository(session, tenant_id)
    request: dict[str, Any] = {"agent": agent_name, "version": version.version, "input": run_input}
    if items is not None:  # part of the request: the same key with other items is a different request
        request["items"] = list(items)
    if priority != DEFAULT_PRIORITY:  # (kept out of the hash at the default, so older keys still match)
        request["priority"] = priority
    request_hash = sha256_hex(request)
    now = utcnow()
    run = Run(
        id=new_id("run"), tenant_id=tenant_id, agent_id=version.agent_id, agent_name=agent_name,
        agent_version_id=version.id, agent_version=version.version, state="queued",
        input=run_input, is_batch=items is not None,
        items_total=len(items) if items is not None else 1, items_done=0, items_failed=0, steps_done=0,
        llm_calls=0, cost_usd=Decimal(0), fence=0, crash_count=0, cancel_requested=False, suspend_requested=False,
        idempotency_key=idempotency_key, request_hash=request_hash, priority=priority, runnable_at=now,
        event_seq=0, created_at=now, updated_at=now, wake_at=now + wake_grace(),
    )
    # The empty log's head is sealed too: deleting every event later cannot pass for a run that never began.
    run.event_seal = seal_head("run", run_chain(tenant_id, run.id), 0, GENESIS)
    if not repo.insert_run(run, items if items is not None else [run_input]):
        existing = repo.by_idempotency_key(idempotency_key or "")
        if existing is None:  # pragma: no cover - the conflicting row must exist
            raise Conflict("could not store the run; retry")
        if existing.request_hash != request_hash:
            raise IdempotencyConflict("this Idempotency-Key was used for a different request",
                                      run_id=existing.id)
        return Submitted(run=existing, created=False)
    # Runs per period are charged when a run is accepted; an exhausted budget refuses it (402).
    charge_run(session, tenant_id, agent_name, now=now)
    enqueue_after_commit(session, EXECUTE_RUN, tenant_id=tenant_id, run_id=run.id, at_most=WAKEUPS_PER_COMMIT)
    call_after_commit(session, lambda: metrics.run_submitted(tenant_id, agent_name))
    return Submitted(run=run, created=True)


def append_event(session: Session, run: Run, kind: str, *, chosen: str, why: str,
                 category: str | None = None) -> None:
    """Append a decision event to a run no worker holds (API-side: a cancel, a resume), moving its chain head."""
    now = utcnow()
    seq, prev = run.event_seq + 1, run.event_head or GENESIS
    row: dict[str, Any] = {"run_id": run.id, "seq": seq, "kind": kind, "item_index": None, "step_index": None,
                           "step_id": None, "considered": None, "chosen": chosen, "why": why, "verdicts": None,
                           "failure_category": category, "cost_usd": Decimal(0), "latency_ms": 0.0,
                           "attempts": None, "input_hash": None, "output_hash": None, "created_at": now,
                           "prev_hash": prev}
    row["hash"] = event_hash(prev, row)
    chain = run_chain(run.tenant_id, run.id)
    seal = broken_marker("run", chain, (run.event_seq, prev, run.event_seal)) or seal_head("run", chain, seq,
                                                                                         row["hash"])
    RunRepository(session, run.tenant_id).append_event(run.id, row, expected_seq=run.event_seq, seal=seal)
    run.event_seq, run.event_head, run.event_seal = seq, row["hash"], seal


def verify_run_log(session: Session, tenant_id: str, run_id: str, page: int = 1000) -> ChainVerdict:
    """Recompute a run's decision log and check it against its sealed head: edits, insertions, reorders,
    deleted events (the newest or all of them) and a moved head all fail.

    No lock: the head is read before and after the events (a head only moves forward, in the same statement
    as its events), so a run writing meanwhile verifies up to the head it had when the read began."""
    repo = RunRepository(session, tenant_id)
    before = repo.head(run_id)
    if before is None:
        raise NotFound(f"run {run_id!r} not found")

    def events() -> Iterator[dict[str, Any]]:
        after: int | None = None
        while True:
            rows = repo.events(run_id, after=after, limit=page)
            for e in rows:
                yield {**{f: getattr(e, f) for f in HASHED_FIELDS}, "prev_hash": e.prev_hash, "hash": e.hash}
            if len(rows) < page:
                return
            after = rows[-1].seq

    verdict = verify_chain(events(), head=before, chain=run_chain(tenant_id, run_id))
    after_head = repo.head(run_id)
    if verdict.ok and after_head is not None and verdict.events > after_head[0]:
        return ChainVerdict(False, verdict.events, after_head[0] + 1, f"events beyond the head (seq {after_head[0]})")
    return verdict


def get_run(session: Session, tenant_id: str, run_id: str) -> Run:
    """The run or NotFound (also for another tenant's run)."""
    return found(RunRepository(session, tenant_id).get(run_id), f"run {run_id!r}")


def cancel_run(session: Session, tenant_id: str, run_id: str) -> Run:
    """Request cancellation: a queued or waiting run stops now, a running one between steps."""
    repo = RunRepository(session, tenant_id)
    run = get_run(session, tenant_id, run_id)
    if run.state in TERMINAL_STATES:
        raise Conflict(f"run is already {run.state}", state=run.state)
    now = utcnow()
    if run.lease_owner is None and repo.set_state(
            run_id, from_states=[run.state], lease_free=True, state="cancelled", reason="cancelled by request",
            cancel_requested=True, finished_at=now, updated_at=now, runnable_at=None, wake_at=None):
        session.refresh(run)
        append_event(session, run, "run.cancelled", chosen="cancelled", why="cancelled by request")
    else:  # a worker holds it: it stops between steps (or the sweeper hands it back first)
        repo.set_state(run_id, from_states=[run.state], cancel_requested=True, updated_at=now)
    session.refresh(run)
    return run


def list_escalations(session: Session, tenant_id: str, *, after: tuple[str, int] | None,
                     limit: int) -> Sequence[tuple[RunItem, Run]]:
    """The escalation queue: items a human must look at, with their reason."""
    return RunRepository(session, tenant_id).escalated_items(after=after, limit=limit)


def resolve_item(session: Session, tenant_id: str, run_id: str, item_index: int, *, action: str, key_id: str,
                 comment: str | None) -> RunItem:
    """Skip or fail an escalated item by hand; the run then finishes (or continues) on its own."""
    repo = RunRepository(session, tenant_id)
    run = get_run(session, tenant_id, run_id)
    item = repo.item(run_id, item_index)
    if item is None:
        raise NotFound(f"run {run_id!r} has no item {item_index}")
    if item.state != "escalated":
        raise Conflict(f"only escalated items can be resolved (item is {item.state})", state=item.state)
    now = utcnow()
    state = "skipped" if action == "skip" else "failed"
    reason = f"{state} by {key_id}" + (f": {comment}" if comment else "") + f" (was: {item.reason})"
    repo.finish_item(run_id, item_index, state, now, reason=reason, category=item.failure_category,
                     steps_used=item.steps_used, llm_calls=item.llm_calls)
    if state == "skipped":
        repo.bump_counters(run_id, items_done=1, items_failed=-1)
    if run.state in ("escalated", "failed") and repo.set_state(
            run_id, from_states=[run.state], state="queued", reason=None, failure_category=None, finished_at=None,
            crash_count=0, updated_at=now, runnable_at=now, wake_at=now + wake_grace()):
        enqueue_after_commit(session, EXECUTE_RUN, tenant_id=tenant_id, run_id=run_id)
    session.flush()
    session.refresh(item)
    return item


def resume_run(session: Session, tenant_id: str, run_id: str) -> Run:
    """Continue a failed/escalated/budget-exhausted run from its last checkpoint."""
    repo = RunRepository(session, tenant_id)
    run = get_run(session, tenant_id, run_id)
    if run.state not in ("failed", "escalated", "budget_exhausted"):
        raise Conflict(f"only failed, escalated or budget_exhausted runs can be resumed (run is {run.state})",
                       state=run.state)
    now = utcnow()
    reset = repo.reset_items(run_id, ("failed", "escalated"))
    repo.set_state(run_id, from_states=[run.state], state="queued", reason=None, failure_category=None,
                   finished_at=None, crash_count=0, cancel_requested=False, updated_at=now,
                   items_failed=max(0, run.items_failed - reset), runnable_at=now, wake_at=now + wake_grace())
    enqueue_after_commit(session, EXECUTE_RUN, tenant_id=tenant_id, run_id=run_id)
    session.refresh(run)
    return run


def set_tenant_status(session: Session, name: str, status: str) -> tuple[Tenant, str, int]:
    """Suspend (``suspended``) or resume (``active``) a tenant; returns it, its status before, and how many
    runs were held or released at once.

    Suspending refuses the tenant's keys, takes its queued runs out of the queue (state ``suspended``) and
    asks its running runs to stop at their next step boundary (the worker's fenced write reads
    ``suspend_requested`` and releases the run as ``suspended``); the claim never picks a suspended
    tenant's run. Resuming puts every suspended run back in the queue exactly where it stopped."""
    tenant = tenant_named(session, name)
    before = tenant.status
    tenant.status = status
    session.flush()
    now = utcnow()
    repo = RunRepository(session, tenant.id)
    if status == "suspended":
        moved = repo.hold_all(now)
    else:
        moved = repo.release_held(now, now + wake_grace())
        for run_id in moved:
            enqueue_after_commit(session, EXECUTE_RUN, tenant_id=tenant.id, run_id=run_id, at_most=WAKEUPS_PER_COMMIT)
    KEYS.clear()  # this process refuses the tenant's keys at once; other API processes within AUTH_CACHE_S
    return tenant, before, len(moved)
