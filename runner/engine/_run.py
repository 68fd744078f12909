"""Executing runs: claim the fairest runnable run, then for each pending item and step decide, call,
validate and checkpoint, for at most one time slice.

A worker thread woken by a message claims runs one after the other (:func:`work`) until none may run
now, so a freed worker takes the next fair run without a broker round trip. Every durable change goes
through the :class:`~runner.engine._journal.Journal`; a step is one fenced statement and a commit. The
run's start rides on its first write and its end on its last step's write whenever nothing else must
happen at the end, so a run costs its claim plus its steps.

Why over 500 lines: the run slice is one state machine (claim, items, steps, defer, finish) whose
helpers share its fields; the kinds, approvals, ledger, journal and hooks already live beside it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from runner.deadline import step_deadline, timed_out
from runner.engine import _hooks as hooks
from runner.engine._approvals import approval_gate
from runner.engine._journal import Journal
from runner.engine._kinds import KINDS, PendingAction, StepContext, StepKind, StepOutcome
from runner.engine._lease import keeper
from runner.engine._ledger import ledger_intent
from runner.engine._registry import LlmReservation, Toolbox
from runner.errors import FailureAction, NonDeterministicSpec, StepFailed
from runner.providers.base import ModelResponse
from runner.rules import StepOutputs
from runner.spec import AgentSpec, Step, cached_version_spec, load_version_spec
from runner.tools.retry import RetryLater
from tenants.agents.repository import AgentRepository
from tenants.audit.service import record as record_audit
from tenants.kit import metrics
from tenants.kit.db import (
    Session,
    begin_explicit,
    call_after_commit,
    dispatch_after_commit,
    enqueue_after_commit,
    is_transient_db_error,
    pinned_session,
    with_db_retry,
)
from tenants.kit.errors import LeaseLost, public_reason
from tenants.kit.ids import sha256_hex, utcnow
from tenants.kit.logging import bind_work, get_logger, redact
from tenants.kit.settings import Settings
from tenants.kit.tracing import SpanHandle, run_slice_span, step_span
from tenants.runs.dispatch import ClaimedRun, dispatch_repository
from tenants.runs.journal import JournalWrite, Release
from tenants.runs.models import LoopCall
from tenants.runs.repository import RunRepository
from tenants.runs.service import EXECUTE_RUN, wake_grace
from tenants.security.service import record_violation

__all__ = ["RunSlice", "execute_next", "request_stop", "send_handed_back", "stopping", "work"]

log = get_logger("engine")
stopping = threading.Event()  # set on SIGTERM: finish the current step, checkpoint, hand the run back
ITEM_PAGE = 200
WORK_BUDGET_S = 5.0  # a message's worker claims runs for this long, then leaves the rest to the next message
_ITEM_STATE: dict[str, str] = {"escalate": "escalated", "fail": "failed", "skip_item": "skipped"}


# Runs handed back because this process is stopping. Their wake-ups are sent by send_handed_back() once the
# process's own consumers are closed: sent earlier, the dying consumer could prefetch one and strand it until
# the broker's dead-consumer recovery (or the sweeper's overdue re-wake) noticed.
_handed_back: list[tuple[str, str]] = []
_handed_back_lock = threading.Lock()


def request_stop() -> None:
    """Ask every execution in this process to hand its run back after the current step."""
    stopping.set()


def send_handed_back() -> int:
    """Wake other workers for the runs this process handed back while stopping (after its consumers closed);
    returns how many. A wake-up lost here only delays the run: the sweeper re-wakes overdue runs."""
    with _handed_back_lock:
        runs, _handed_back[:] = list(_handed_back), []
    for tenant_id, run_id in runs:
        try:
            dispatch_after_commit(EXECUTE_RUN, {"tenant_id": tenant_id, "run_id": run_id})
        except Exception:
            log.warning("wake_up_not_sent", run_id=run_id, exc_info=True)
    return len(runs)


def _remember_handed_back(tenant_id: str, run_id: str) -> None:
    with _handed_back_lock:
        _handed_back.append((tenant_id, run_id))


@dataclass(slots=True)
class PendingItem:
    """An item still to do, and where it stands."""

    item_index: int
    input: Any
    steps_used: int = 0
    llm_calls: int = 0
    next_attempt: int = 1


class _Stop(Exception):
    """Internal: stop working on this run now (waiting, cancelled, suspended, handed back)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class RunSlice:
    """One time slice of one claimed run (see the module docstring)."""

    def __init__(self, settings: Settings, claimed: ClaimedRun, spec: AgentSpec, session: Session | None) -> None:
        self.settings = settings
        self.claimed = claimed
        self.spec = spec
        self.tenant_id = claimed.tenant_id
        self.run_id = claimed.id
        self.agent_name = claimed.agent_name
        self.journal = Journal(claimed.tenant_id, claimed.id, claimed.fence,
                               (claimed.event_seq, claimed.event_head, claimed.event_seal),
                               strict=settings.durability == "strict",
                               session=session)
        self.toolbox = Toolbox(settings, claimed.tenant_id, spec)
        self.toolbox.run_id = claimed.id
        self.toolbox.agent_name = claimed.agent_name
        self.toolbox.spent = claimed.cost_usd
        self.cost = claimed.cost_usd
        self.items_done = claimed.items_done
        self.items_failed = claimed.items_failed
        self.started = time.monotonic()
        self.deadline = self.started + settings.time_slice_seconds
        self.run_deadline = claimed.started_at + timedelta(seconds=spec.autonomy.max_duration_s)
        self.ended = False

    # ---- services the step kinds use (runner.engine._kinds.EngineServices) -------------------
    def ledger_intent(self, ctx: StepContext, idempotent: bool, *, suffix: str = "",
                      tool_name: str | None = None) -> str:
        return ledger_intent(self.journal, ctx, idempotent, suffix=suffix, tool_name=tool_name)

    def side_effect(self, step: Step) -> bool:
        if step.side_effect is not None:
            return step.side_effect
        if step.tool is None:
            return False
        try:
            return bool(self.toolbox.tool(step.tool).side_effect)
        except StepFailed:
            return False

    def loop_calls(self, ctx: StepContext) -> list[LoopCall]:
        def read(session: Session) -> list[LoopCall]:
            calls = list(RunRepository(session, self.tenant_id).loop_calls(self.run_id, ctx.item_index, ctx.index))
            session.expunge_all()
            return calls

        return self.journal.read(read, "load loop calls")

    def record_loop_call(self, ctx: StepContext, values: dict[str, Any], key: str | None, output: Any,
                         event: dict[str, Any]) -> None:
        now = utcnow()
        fields = dict(event)
        kind = str(fields.pop("kind"))
        self.journal.event(now, kind, item_index=ctx.item_index, step_index=ctx.index, step_id=ctx.step.id,
                           **fields)
        write = self.journal.write(
            now, loop_call={**values, "item_index": ctx.item_index, "step_index": ctx.index,
                            "fence": self.claimed.fence, "created_at": now},
            side_effect=(key, {"state": "succeeded", "outcome": redact(output), "completed_at": now})
            if key is not None else None)
        self._stop_if_asked(self.journal.commit(write, what="loop call"))

    def record_model_turn(self, ctx: StepContext, hold: LlmReservation, response: ModelResponse,
                          values: dict[str, Any] | None, event: dict[str, Any], llm_calls: int) -> Decimal:
        now = utcnow()
        charged: list[Decimal] = []
        usage = response.usage

        def build(session: Session) -> JournalWrite:
            cost = self.toolbox.reconcile_llm(session, hold, usage.input_tokens, usage.output_tokens,
                                              response.cost_usd)
            charged[:] = [cost]
            fields = dict(event)
            kind = str(fields.pop("kind"))
            self.journal.event(now, kind, item_index=ctx.item_index, step_index=ctx.index, step_id=ctx.step.id,
                               cost_usd=cost, **fields)
            row = None if values is None else {
                **values, "cost_usd": cost, "llm_calls": llm_calls, "item_index": ctx.item_index,
                "step_index": ctx.index, "fence": self.claimed.fence, "created_at": now}
            return self.journal.write(now, llm_calls=llm_calls, cost_usd=cost, loop_call=row)

        flags = self.journal.commit(build, what="model turn")
        self.cost += charged[0]
        self.toolbox.spent += charged[0]
        self._stop_if_asked(flags)
        return charged[0]

    def approve(self, ctx: StepContext, pending: PendingAction) -> None:
        if not approval_gate(self, ctx, pending):
            raise _Stop("waiting for approval")

    def at_checkpoint(self) -> None:
        if stopping.is_set():
            self._hand_back("shutdown")
            raise _Stop("shutdown")

    def autonomy_bound(self, steps_used: int, llm_calls: int, *, model_call: bool) -> str | None:
        autonomy = self.spec.autonomy
        if steps_used >= autonomy.max_steps:
            return f"autonomy bound max_steps={autonomy.max_steps} reached"
        if model_call and llm_calls >= autonomy.max_llm_calls:
            return f"autonomy bound max_llm_calls={autonomy.max_llm_calls} reached"
        if utcnow() > self.run_deadline:
            return f"autonomy bound max_duration_s={autonomy.max_duration_s} exceeded"
        return None

    def release(self, now: datetime, *, state: str | None = None, reason: str | None = None,
                category: str | None = None, runnable_at: datetime | None = None, wake_at: datetime | None = None,
                finished: bool = False) -> Release:
        """A lease release at ``now`` charging this slice's real cost to the tenant's schedule."""
        return Release(state=state, reason=reason, category=category, runnable_at=runnable_at, wake_at=wake_at,
                       finished=finished, slice_s=time.monotonic() - self.started)

    # ---- the slice --------------------------------------------------------------------------
    def execute(self) -> None:
        """Work on the run for one time slice (logs and spans carry the run's tenant, id and agent)."""
        with bind_work(tenant_id=self.tenant_id, run_id=self.run_id, agent=self.agent_name), \
                run_slice_span(tenant_id=self.tenant_id, run_id=self.run_id, agent=self.agent_name,
                               agent_version=self.claimed.agent_version):
            self._execute()

    def _execute(self) -> None:
        keeper.hold(self.run_id, self.claimed.fence, self.settings.lease_seconds)
        try:
            self._begin()
            for item, checkpoints in self._pending():
                self._item(item, checkpoints)
                if self.ended:
                    return
                if keeper.lost(self.run_id):
                    raise _Stop("lease lost")
                if stopping.is_set() or time.monotonic() > self.deadline:
                    self._hand_back("shutdown" if stopping.is_set() else "time slice used")
                    return
            self._complete()
        except _Stop as stop:
            log.info("run_stopped", run_id=self.run_id, why=stop.why)
        except LeaseLost:
            metrics.lease_lost(self.tenant_id)
            log.warning("lease_lost", run_id=self.run_id, fence=self.claimed.fence)
        except Exception as exc:
            if is_transient_db_error(exc):
                raise  # the database stayed down past the back-off: Dramatiq retries, the sweeper recovers
            # A bug must fail loudly, once: not loop through redeliveries until redelivery_exhausted.
            log.exception("internal_error", run_id=self.run_id)
            self._finish("failed", f"internal error: {public_reason(exc)}", "internal")
        finally:
            keeper.drop(self.run_id)

    def _begin(self) -> None:
        """The slice's first event, which rides on its first write."""
        first = self.claimed.event_seq == 0
        self.journal.event(utcnow(), "run.started" if first else "run.resumed",
                           chosen=f"agent version {self.claimed.agent_version}",
                           why="first start" if first else
                           f"resumed at the last checkpoint (owner changes after a crash: {self.claimed.crash_count})",
                           considered=[s.id for s in self.spec.steps])

    def _pending(self) -> Iterator[tuple[PendingItem, dict[int, Any]]]:
        """Pending items with their checkpoints, a page at a time (a fresh single run needs no read)."""
        if not self.claimed.is_batch and self.claimed.event_seq == 0:
            yield PendingItem(0, self.claimed.input), {}
            return
        after = -1
        while True:
            page = self.journal.read(lambda s, a=after: self._page(s, a), "load items")  # type: ignore[misc]
            for item, checkpoints in page:
                after = item.item_index
                yield item, checkpoints
            if len(page) < ITEM_PAGE:
                return

    def _page(self, session: Session, after: int) -> list[tuple[PendingItem, dict[int, Any]]]:
        repo = RunRepository(session, self.tenant_id)
        items = list(repo.pending_items(self.run_id, after, ITEM_PAGE))
        found: dict[int, dict[int, Any]] = {}
        if items:
            for cp in repo.checkpoints_between(self.run_id, items[0].item_index, items[-1].item_index):
                found.setdefault(cp.item_index, {})[cp.step_index] = cp
        session.expunge_all()
        return [(PendingItem(i.item_index, i.input, i.steps_used, i.llm_calls, i.next_attempt),
                 found.get(i.item_index, {})) for i in items]

    def _item(self, item: PendingItem, checkpoints: dict[int, Any]) -> None:
        context: dict[str, Any] = {"input": self.claimed.input, "item": item.input, "steps": StepOutputs()}
        used = (item.steps_used, item.llm_calls)  # steps and model calls the item has used so far
        for index, step in enumerate(self.spec.steps):
            cp = checkpoints.get(index)
            if cp is not None:  # done before: replay its output (checked by name against the pinned spec)
                if cp.step_id != step.id:
                    self._fail_run(NonDeterministicSpec(
                        f"checkpoint at item {item.item_index} step {index} is {cp.step_id!r} but the pinned "
                        f"spec says {step.id!r}"))
                context["steps"][step.id] = {"output": cp.output}
                used = (cp.steps_used, cp.llm_calls) if cp.steps_used is not None else (used[0] + 1, used[1])
                continue
            attempt = item.next_attempt if index == len(checkpoints) else 1
            with bind_work(item=item.item_index, step=step.id, attempt=attempt), \
                    step_span(step_id=step.id, kind=step.kind, item_index=item.item_index, step_index=index,
                              attempt=attempt) as span:
                after = self._step(item, index, step, context, attempt, used, span)
            if after is None or self.ended:
                return
            used = after
            if index < len(self.spec.steps) - 1:
                self.at_checkpoint()  # SIGTERM: hand back after the step in flight, not after the whole item

    def _step(self, item: PendingItem, index: int, step: Step, context: dict[str, Any], attempt: int,
              used: tuple[int, int], span: SpanHandle) -> tuple[int, int] | None:
        """Run one step of one item; the (steps, model calls) used after it, or None when the item ended."""
        steps_used, llm_calls = used
        bound = self._bound_exceeded(step, steps_used, llm_calls)
        if bound is not None:
            self._item_failed(item, index, step, StepFailed("budget", bound, action="escalate"), 0.0,
                              steps_used, llm_calls)
            return None
        started = time.perf_counter()
        ctx = StepContext(self, self.toolbox, self.run_id, self.tenant_id, item.item_index, index, step, context,
                          attempt, steps_used, llm_calls)
        kind = KINDS[step.kind]
        try:
            pending = kind.pending_action(ctx)
            self.approve(ctx, pending)
            outcome = _run_within_timeout(kind, ctx, pending)
            # A secret an upstream echoed never gets further: not stored, templated, recorded or returned.
            outcome.output = self.toolbox.mask(outcome.output)
        except RetryLater as later:
            self._defer(item, index, step, later.delay_s, later.next_attempt, later.reason,
                        later.details.get("attempts"))
        except StepFailed as failure:
            failure = self._apply_dependency_policy(item, index, step, failure)
            seconds = time.perf_counter() - started
            span.fail(failure.category, failure.reason)
            with bind_work(failure_category=failure.category):
                self._item_failed(item, index, step, failure, seconds * 1000,
                                  steps_used + int(failure.details.get("steps", 1)),
                                  llm_calls + int(failure.details.get("llm_calls", 0)))
            if failure.details.get("stop_run"):
                self._finish("budget_exhausted", failure.reason, "budget")
                raise _Stop("budget exhausted") from failure
            return None
        steps_used += outcome.steps
        llm_calls += outcome.llm_calls
        latency_ms = (time.perf_counter() - started) * 1000
        self._checkpoint(item, index, step, outcome, latency_ms, index == len(self.spec.steps) - 1, steps_used,
                         llm_calls)
        metrics.step_finished(self.tenant_id, self.agent_name, ok=True, seconds=latency_ms / 1000,
                              retries=outcome.attempts - 1)
        context["steps"][step.id] = {"output": outcome.output}
        return steps_used, llm_calls

    def _bound_exceeded(self, step: Step, steps_used: int, llm_calls: int) -> str | None:
        return self.autonomy_bound(steps_used, llm_calls, model_call=step.llm is not None or step.agent is not None)

    # ---- writes -------------------------------------------------------------------------------
    def _checkpoint(self, item: PendingItem, index: int, step: Step, outcome: StepOutcome, latency_ms: float,
                    last: bool, steps_used: int, llm_calls: int) -> None:
        """One fenced write: the checkpoint, its event, the item's end, the side effect's outcome, and, when
        this was the run's last pending step and nothing else must happen at the end, the run's end."""
        now = utcnow()
        output_hash = sha256_hex(outcome.output)
        key = outcome.idempotency_key
        self.journal.event(now, "step.succeeded", item_index=item.item_index, step_index=index, step_id=step.id,
                           considered=outcome.considered, chosen=outcome.chosen, why=outcome.why,
                           verdicts=outcome.verdicts or None, cost_usd=outcome.cost_usd, latency_ms=latency_ms,
                           attempts=outcome.attempts, input_hash=sha256_hex(outcome.input_hash_source),
                           output_hash=output_hash)
        new_cost = outcome.cost_usd - outcome.recorded_cost_usd  # the agent loop's turns are already counted
        new_calls = outcome.llm_calls - outcome.recorded_llm_calls
        self.cost += new_cost
        ends_run = (last and self.items_failed == 0 and self.items_done + 1 >= self.claimed.items_total
                    and not hooks.has_in_transaction("succeeded"))
        release = None
        if ends_run:
            self.journal.event(now, "run.succeeded", chosen="succeeded", why="every item completed",
                               cost_usd=self.cost)
            release = self.release(now, state="succeeded", finished=True)
        write = self.journal.write(
            now, steps=1, items_done=int(last), llm_calls=new_calls, cost_usd=new_cost,
            checkpoint={"item_index": item.item_index, "step_index": index, "step_id": step.id, "status": "succeeded",
                        "output": outcome.output, "output_hash": output_hash, "attempts": outcome.attempts,
                        "latency_ms": round(latency_ms, 3), "fence": self.claimed.fence, "created_at": now,
                        "steps_used": steps_used, "llm_calls": llm_calls},
            item_end={"item_index": item.item_index, "state": "done", "steps_used": steps_used,
                      "llm_calls": llm_calls} if last else None,
            item_attempt=(item.item_index, 1) if item.next_attempt != 1 else None,
            side_effect=(key, {"state": "succeeded", "outcome": redact(outcome.output), "completed_at": now})
            if key is not None else None,
            release=release)
        # A pure tool step may skip the WAL flush wait, and need not wait for its write at all: redoing it
        # after a crash is harmless (Journal.commit_later).
        durable = key is not None or step.tool is None
        flags = (self.journal.commit(write, durable=durable, what="checkpoint") if durable or release is not None
                 else self.journal.commit_later(write))
        item.next_attempt = 1
        self.items_done += int(last)
        if ends_run:
            self._ended("succeeded", None, None)
            return
        if flags is not None:
            self._stop_if_asked(flags)

    def _stop_if_asked(self, flags: Any) -> None:
        if flags.cancel_requested:
            self._finish("cancelled", "cancelled by request", None)
            raise _Stop("cancelled")
        if flags.suspend_requested:
            self._suspend()

    def _item_failed(self, item: PendingItem, index: int, step: Step, failure: StepFailed, latency_ms: float,
                     steps_used: int, llm_calls: int) -> None:
        state = _ITEM_STATE[failure.action]
        metrics.step_finished(self.tenant_id, self.agent_name, ok=False, category=failure.category,
                              seconds=latency_ms / 1000, retries=failure.attempts - 1)
        now = utcnow()
        cost = Decimal(str(failure.details.get("cost_usd", 0)))
        new_cost = cost - Decimal(str(failure.details.get("recorded_cost_usd", 0)))  # see StepOutcome
        new_calls = int(failure.details.get("llm_calls", 0)) - int(failure.details.get("recorded_llm_calls", 0))
        self.journal.event(now, "step.failed", item_index=item.item_index, step_index=index, step_id=step.id,
                           considered=failure.details.get("considered") or [state, "retry"], chosen=state,
                           why=failure.reason, verdicts=failure.details.get("verdicts") or failure.details.get(
                               "attempts"), failure_category=failure.category, latency_ms=latency_ms,
                           attempts=failure.attempts, cost_usd=cost)
        key = failure.details.get("idempotency_key")
        write = self.journal.write(
            now, items_done=int(state == "skipped"), items_failed=int(state != "skipped"),
            llm_calls=new_calls, cost_usd=new_cost,
            item_end={"item_index": item.item_index, "state": state, "reason": failure.reason,
                      "category": failure.category, "steps_used": steps_used, "llm_calls": llm_calls},
            side_effect=(str(key), {"state": "unknown"}) if key else None)

        def scope_violation(session: Session, _flags: Any) -> None:
            if failure.category != "scope":
                return
            details = failure.details
            kind = str(details.get("kind") or "host")
            target = str(details.get("target") or details.get("host") or details.get("url") or "")
            record_violation(session, self.tenant_id, run_id=self.run_id, agent_name=self.agent_name,
                             step_id=step.id, kind=kind, target=target, reason=failure.reason, at=now)
            record_audit(session, self.tenant_id, actor="runner", role="runner", action="scope.violation",
                         target=self.run_id, details={"kind": kind, "name": target, "step_id": step.id})

        log.warning("step_failed", run_id=self.run_id, item=item.item_index, step=step.id,
                    category=failure.category, reason=failure.reason)
        flags = self.journal.commit(write, what="item failure", after=scope_violation,
                                    atomic=failure.category == "scope")
        self.cost += new_cost
        if state == "skipped":
            self.items_done += 1
        else:
            self.items_failed += 1
        self._stop_if_asked(flags)

    def _defer(self, item: PendingItem, index: int, step: Step, delay_s: float, next_attempt: int, reason: str,
               attempts: Any) -> None:
        """Release the worker for a long backoff: remember the attempt number, be runnable after ``delay_s``."""
        now = utcnow()
        self.journal.event(now, "step.deferred", item_index=item.item_index, step_index=index, step_id=step.id,
                           considered=["sleep in the worker", "release the worker and wake up later"],
                           chosen=f"wake up in {delay_s:.1f}s (attempt {next_attempt} next)", why=reason,
                           verdicts=attempts, failure_category="dependency")
        due = now + timedelta(seconds=delay_s)
        write = self.journal.write(now, item_attempt=(item.item_index, next_attempt),
                                   release=self.release(now, runnable_at=due, wake_at=due + timedelta(seconds=30)))
        self.journal.commit(write, what="defer", after=lambda s, _f: enqueue_after_commit(
            s, EXECUTE_RUN, delay_s=delay_s, tenant_id=self.tenant_id, run_id=self.run_id))
        raise _Stop(f"deferred {delay_s:.1f}s: {reason}")

    def _hand_back(self, why: str) -> None:
        """Release the lease and put the run back in the queue, so this or another worker continues it."""
        now = utcnow()
        write = self.journal.write(now, release=self.release(now, runnable_at=now, wake_at=now + wake_grace()))
        if stopping.is_set():  # woken once this process's consumers are closed (send_handed_back)
            self.journal.commit(write, durable=False, what="hand back", after=lambda s, _f: call_after_commit(
                s, lambda: _remember_handed_back(self.tenant_id, self.run_id)))
        else:
            self.journal.commit(write, durable=False, what="hand back", after=lambda s, _f: enqueue_after_commit(
                s, EXECUTE_RUN, tenant_id=self.tenant_id, run_id=self.run_id))
        log.info("run_handed_back", run_id=self.run_id, why=why)

    def _suspend(self) -> None:
        """The tenant was suspended: stop at this step boundary, out of the queue until it is resumed.

        Released like a hand-back: the journal parks the run as ``suspended`` while the tenant still is
        (``suspend_requested`` read in the same statement), so a resumption that landed meanwhile simply
        leaves the run in the queue instead of stranding it."""
        now = utcnow()
        self.journal.event(now, "run.suspended", chosen="suspended", considered=["continue", "stop here"],
                           why="the operator suspended the tenant; the run continues from here when it is resumed")
        write = self.journal.write(now, release=self.release(now, runnable_at=now, wake_at=now + wake_grace()))
        self.journal.commit(write, what="suspend", after=lambda s, _f: enqueue_after_commit(
            s, EXECUTE_RUN, tenant_id=self.tenant_id, run_id=self.run_id))
        raise _Stop("tenant suspended")

    def _complete(self) -> None:
        """Every item has an outcome: end the run by the worst of them."""
        counts = self.journal.read(lambda s: RunRepository(s, self.tenant_id).item_outcomes(self.run_id),
                                   "outcomes")
        total = sum(counts.values())
        for state in ("failed", "escalated"):
            if counts.get(state, 0):
                first = self.journal.read(lambda s, st=state: _first_problem(s, self.tenant_id, self.run_id, st),  # type: ignore[misc]
                                          "first problem")
                reason = first[1] if first else ""
                if total > 1:
                    reason = f"{counts[state]} of {total} items {state}; first (item {first[0] if first else '?'}): " \
                             f"{reason}"
                self._finish(state, reason or state, first[2] if first else None)
                return
        self._finish("succeeded", None, None)

    def _fail_run(self, error: NonDeterministicSpec) -> None:
        self._finish("failed", str(error), "state", code=error.code)
        raise _Stop("non-deterministic spec")

    def fail_exhausted(self, reason: str) -> None:
        """Give up on a run whose workers keep vanishing (poison run)."""
        self._finish("failed", reason, "internal", code="redelivery_exhausted")

    def _finish(self, state: str, reason: str | None, category: str | None, code: str | None = None) -> None:
        now = utcnow()
        self.journal.event(now, f"run.{state}", chosen=state, why=reason or "every item completed",
                           failure_category=category, considered=[code] if code else None, cost_usd=self.cost)
        ended = hooks.RunEnded(self.tenant_id, self.run_id, self.agent_name, state, reason, category, self.cost)
        write = self.journal.write(now, release=self.release(now, state=state, reason=reason, category=category,
                                                             finished=True))
        self.journal.commit(write, what="finish", after=lambda s, _f: hooks.in_transaction(s, ended),
                            atomic=hooks.has_in_transaction(state))
        self._ended(state, reason, category)

    def _ended(self, state: str, reason: str | None, category: str | None) -> None:
        self.ended = True
        hooks.after_commit(hooks.RunEnded(self.tenant_id, self.run_id, self.agent_name, state, reason, category,
                                          self.cost))

    def _apply_dependency_policy(self, item: PendingItem, index: int, step: Step, failure: StepFailed) -> StepFailed:
        """Map a dependency failure to the step's ``on_dependency_failure`` (default: escalate for side
        effects; otherwise the tool's own retries already ran, then escalate). A tripped breaker with
        policy ``retry`` waits for its next probe instead of failing."""
        if failure.category != "dependency":
            return failure
        policy = step.on_dependency_failure or ("escalate" if self.side_effect(step) else "retry")
        retry_at = failure.details.get("breaker_retry_at")
        if policy == "retry" and retry_at:
            delay = max(0.5, float(retry_at) - time.time())
            self._defer(item, index, step, delay, item.next_attempt, failure.reason, failure.details.get("attempts"))
        action: FailureAction = {"retry": "escalate", "fallback": "escalate", "escalate": "escalate",
                                 "fail": "fail", "skip_item": "skip_item"}[policy]  # type: ignore[assignment]
        return StepFailed(failure.category, f"{failure.reason} (on_dependency_failure: {policy})", action=action,
                          attempts=failure.attempts, details=failure.details)


def _run_within_timeout(kind: StepKind, ctx: StepContext, pending: PendingAction) -> StepOutcome:
    """Run the step under its ``timeout_s``: calls get the time left as their timeout (runner.deadline), and a
    step that finishes late fails as ``dependency`` all the same."""
    timeout_s = ctx.step.timeout_s
    started = time.monotonic()
    with step_deadline(ctx.step.id, timeout_s):
        outcome = kind.run(ctx, pending)
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise timed_out()
    return outcome


def _first_problem(session: Session, tenant_id: str, run_id: str, state: str) -> tuple[int, str, str | None] | None:
    found = RunRepository(session, tenant_id).items(run_id, after=None, limit=1, state=state)
    if not found:
        return None
    return found[0].item_index, found[0].reason or "", found[0].failure_category


# ---- claiming ---------------------------------------------------------------------------------
def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _spec(session: Session, claimed: ClaimedRun) -> AgentSpec:
    """The run's pinned spec, read from the database once per process per version."""
    spec = cached_version_spec(claimed.agent_version_id)
    if spec is not None:
        return spec
    version = AgentRepository(session, claimed.tenant_id).version_by_id(claimed.agent_version_id)
    assert version is not None
    spec = load_version_spec(version.id, version.spec)
    session.rollback()  # end the read: no transaction stays open while the run works
    return spec


class _Connection:
    """The worker thread's pinned connection, kept across claims and slices; replaced after an error."""

    def __init__(self) -> None:
        self.session: Session | None = None

    def get(self) -> Session:
        if self.session is None:
            self.session = pinned_session()
        return self.session

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.rollback()
                session.close()
                if session.bind is not None and hasattr(session.bind, "close"):
                    session.bind.close()
            except Exception:
                log.debug("session_close_failed", exc_info=True)


def _claim(settings: Settings, conn: _Connection) -> ClaimedRun | None:
    def attempt() -> ClaimedRun | None:
        session = conn.get()
        try:
            repo = dispatch_repository(session)
            if repo.one_statement:  # PostgreSQL: one autocommitted statement, never counted half-way
                return repo.claim(_owner(), utcnow(), settings.lease_seconds)
            begin_explicit(session)  # a claim that a cap refuses half-way must count nothing: one transaction
            claimed = repo.claim(_owner(), utcnow(), settings.lease_seconds)
            if claimed is None:
                session.rollback()  # a cap may have said no after a schedule row was counted
            else:
                session.commit()
            return claimed
        except BaseException:
            conn.close()
            raise

    return with_db_retry(attempt, "claim")


def execute_next(settings: Settings, conn: _Connection | None = None) -> bool:
    """Claim the fairest runnable run and work on it for one time slice; False when nothing may run now."""
    own = conn is None
    conn = conn or _Connection()
    try:
        claimed = _claim(settings, conn)
        if claimed is None:
            return False
        if claimed.event_seq == 0:  # its first start: how long it waited in the queue
            metrics.run_started(claimed.tenant_id, claimed.agent_name,
                                (utcnow() - claimed.created_at).total_seconds())
        spec = with_db_retry(lambda: _spec(conn.get(), claimed), "load spec")
        run = RunSlice(settings, claimed, spec, conn.get())
        try:
            if claimed.crash_count > settings.max_redeliveries:
                try:
                    run.fail_exhausted(f"redelivery_exhausted: the run's worker vanished {claimed.crash_count} "
                                       f"times (limit {settings.max_redeliveries})")
                except LeaseLost:
                    log.warning("lease_lost", run_id=claimed.id)
            else:
                run.execute()
        finally:
            conn.session = run.journal.detach()
        return True
    finally:
        if own:
            conn.close()


def work(settings: Settings, budget_s: float = WORK_BUDGET_S) -> int:
    """A wake-up's work: claim and execute runs until none may run now or ``budget_s`` is used (then the
    next wake-up continues, so a message never holds its thread for long). Returns the slices executed."""
    conn = _Connection()
    until = time.monotonic() + budget_s
    done = 0
    try:
        while not stopping.is_set():
            if not execute_next(settings, conn):
                return done
            done += 1
            if time.monotonic() > until:
                dispatch_after_commit(EXECUTE_RUN, {"tenant_id": "", "run_id": ""})  # more may be waiting
                return done
        return done
    finally:
        conn.close()
