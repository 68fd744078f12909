"""Executing a run: lease, then for each pending item and step, call, validate and checkpoint.

One actor invocation works on a run for at most a time slice, then releases its lease and
re-enqueues the run, so long batches share workers. Every step's checkpoint, decision event,
counters and side-effect outcome are written in one commit guarded by the fencing token.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from runner.engine._lease import LeaseKeeper
from runner.engine._registry import Toolbox
from runner.engine._steps import (
    LlmLog,
    ModelParams,
    StepOutcome,
    ask_models,
    run_llm_step,
    run_tool_step,
    validate_output,
)
from runner.errors import FailureAction, NonDeterministicSpec, RuleError, StepFailed, TemplateError
from runner.metrics import RUNS_FINISHED, STEP_SECONDS, STEPS
from runner.providers.base import Message
from runner.rules import compile_rule
from runner.spec import AgentSpec, Step, load_spec
from runner.templating import render
from runner.tools.base import ToolCall
from runner.tools.retry import RetryLater
from tenants.agents.repository import AgentRepository
from tenants.approvals.repository import ApprovalRepository
from tenants.approvals.service import ApprovalRequest, request_approval
from tenants.audit.service import record as record_audit
from tenants.budgets.service import acquire_slot, release_slot, slot_retry_delay_s
from tenants.kit.db import (
    Session,
    enqueue_after_commit,
    is_transient_db_error,
    pinned_session,
    relax_durability,
    unit_of_work,
    with_db_retry,
)
from tenants.kit.errors import LeaseLost
from tenants.kit.ids import sha256_hex, utcnow
from tenants.kit.logging import get_logger, redact
from tenants.kit.settings import Settings
from tenants.reliability.service import StepStatsBuffer, record_run_finished, record_run_started
from tenants.runs.events import GENESIS, event_hash
from tenants.runs.models import Run, RunItem, StepCheckpoint
from tenants.runs.repository import RunRepository
from tenants.runs.service import EXECUTE_RUN, wake_grace
from tenants.security.service import record_violation
from tenants.webhooks.service import emit

__all__ = ["execute_run", "request_stop", "stopping"]

log = get_logger("engine")
T = TypeVar("T")

stopping = threading.Event()  # set on SIGTERM: finish the current step, checkpoint, hand the run back
ITEM_PAGE = 200
SLOT_TTL_S = 300.0  # a concurrency slot outlives a time slice; the lease keeper renews it during long steps
STATS_FLUSH_S = 1.0  # step statistics (read model) are written at most about once a second


def request_stop() -> None:
    """Ask every execution in this process to hand its run back after the current step."""
    stopping.set()


@functools.lru_cache(maxsize=256)
def _spec_for(version_id: str, spec_json: str) -> AgentSpec:
    import json

    return load_spec(json.loads(spec_json))


_keepers: dict[float, LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def _keeper(lease_s: float) -> LeaseKeeper:
    with _keepers_lock:
        if lease_s not in _keepers:
            _keepers[lease_s] = LeaseKeeper(lease_s)
        return _keepers[lease_s]


@dataclass(slots=True)
class _Stop(Exception):
    """Internal: stop working on this run now (cancelled, lease lost, handed back)."""

    why: str


class _Execution:
    def __init__(self, settings: Settings, tenant_id: str, run: Run, spec: AgentSpec, fence: int,
                 last_event: tuple[int, str] | None) -> None:
        self.settings = settings
        self.tenant_id = tenant_id
        self.run = run
        self.run_id = run.id
        self.spec = spec
        self.fence = fence
        self.seq, self.prev_hash = last_event or (0, GENESIS)
        self.lease_s = settings.lease_seconds
        self.slice_deadline = time.monotonic() + settings.time_slice_seconds
        self._open_session: Session | None = None
        self._stats = StepStatsBuffer()
        self._stats_flushed = time.monotonic()
        self._later: list[Callable[[Session], None]] = []  # read-model updates after the next commit
        self.toolbox = Toolbox(settings, tenant_id, spec)
        self.toolbox.run_id = run.id
        self.toolbox.agent_name = run.agent_name
        self.toolbox.spent = run.cost_usd or Decimal(0)
        started = run.started_at or utcnow()
        self.run_deadline = started + timedelta(seconds=spec.autonomy.max_duration_s)

    # ---- transactions ---------------------------------------------------------------------
    # One session (one pooled connection) per slice: a step costs its statements and a commit,
    # not a connection checkout and pre-ping. After a database error the session is replaced.
    def _session(self) -> Session:
        if self._open_session is None:
            self._open_session = pinned_session()
        return self._open_session

    def _discard_session(self) -> None:
        if self._open_session is not None:
            try:
                self._open_session.rollback()
                self._open_session.close()
                bind = self._open_session.bind
                if bind is not None and hasattr(bind, "close"):
                    bind.close()  # the pinned connection goes back to the pool
            except Exception:  # the connection may already be gone
                log.debug("session_close_failed", exc_info=True)
            self._open_session = None

    def _event(self, repo: RunRepository, now: datetime, kind: str, **fields: Any) -> None:
        """Append a hash-chained, redacted decision event (in the caller's transaction)."""
        repo.add_event(self._event_row(now, kind, **fields))

    def _event_row(self, now: datetime, kind: str, **fields: Any) -> dict[str, Any]:
        """The next decision event of the chain (redacted and hashed); advances seq and the chain head."""
        row: dict[str, Any] = {
            "run_id": self.run_id, "seq": self.seq + 1, "kind": kind,
            "item_index": fields.get("item_index"), "step_index": fields.get("step_index"),
            "step_id": fields.get("step_id"), "considered": redact(fields.get("considered")),
            "chosen": redact(fields.get("chosen")), "why": redact(fields.get("why")),
            "verdicts": redact(fields.get("verdicts")), "failure_category": fields.get("failure_category"),
            "cost_usd": fields.get("cost_usd", Decimal(0)),
            "latency_ms": round(float(fields.get("latency_ms", 0.0)), 3),
            "input_hash": fields.get("input_hash"), "output_hash": fields.get("output_hash"),
            "created_at": now,
        }
        row["prev_hash"] = self.prev_hash
        row["hash"] = event_hash(self.prev_hash, row)
        self.seq += 1
        self.prev_hash = row["hash"]
        return row

    def _flush_stats(self, now: datetime, *, force: bool = False) -> None:
        """Schedule the buffered step statistics (read model) for writing, about once a second."""
        if self._stats and (force or time.monotonic() - self._stats_flushed >= STATS_FLUSH_S):
            self._later.append(lambda s: self._stats.flush(s, self.tenant_id, self.run.agent_name, now))
            self._stats_flushed = time.monotonic()

    def _update_read_models(self) -> None:
        """Apply the rollups scheduled by the transaction that just committed, in a transaction of their own
        that does not wait for the WAL flush: hot rollup rows are locked for microseconds, not for an fsync.
        A crash in between loses only those statistics, never run state."""
        todo, self._later = self._later, []
        session = self._session()
        try:
            relax_durability(session)
            for update_model in todo:
                update_model(session)
            session.commit()
        except Exception:  # a read model must never fail a run
            log.warning("read_model_update_failed", run_id=self.run_id, exc_info=True)
            self._discard_session()

    def _committed(self, write: Callable[[Session, RunRepository], T], what: str) -> T:
        """One fenced unit of work with database back-off; the event chain rolls back with it."""
        seq, prev = self.seq, self.prev_hash

        def attempt() -> T:
            self.seq, self.prev_hash = seq, prev
            self._later = []
            session = self._session()
            try:
                result = write(session, RunRepository(session, self.tenant_id))
                session.commit()
            except BaseException:
                self._discard_session()
                raise
            if self._later:
                self._update_read_models()
            return result

        try:
            return with_db_retry(attempt, what)
        except BaseException:
            self.seq, self.prev_hash = seq, prev
            raise

    # ---- the run --------------------------------------------------------------------------
    def execute(self, crash_count: int) -> None:
        keeper = _keeper(self.lease_s)
        keeper.hold(self.run_id, self.fence, self.tenant_id)
        try:
            self._begin(crash_count)
            after = -1
            while True:
                page, checkpoints = self._page(after)
                if not page:
                    break
                for item in page:
                    after = item.item_index
                    self._item(item, checkpoints.get(item.item_index, {}))
                    if keeper.lost(self.run_id):
                        raise _Stop("lease lost")
                    if stopping.is_set() or time.monotonic() > self.slice_deadline:
                        self._hand_back("shutdown" if stopping.is_set() else "time slice used")
                        return
            self._complete()
        except _Stop as stop:
            log.info("run_stopped", run_id=self.run_id, why=stop.why)
        except LeaseLost:
            log.warning("lease_lost", run_id=self.run_id, fence=self.fence)
        except Exception as exc:
            if is_transient_db_error(exc):
                raise  # the database stayed down past the back-off: Dramatiq retries, the sweeper recovers
            # A bug must fail loudly, once: not loop through redeliveries until redelivery_exhausted.
            log.exception("internal_error", run_id=self.run_id)
            self._finish("failed", f"internal error: {type(exc).__name__}: {str(exc)[:300]}", "internal")
        finally:
            keeper.drop(self.run_id)
            self._discard_session()

    def _begin(self, crash_count: int) -> None:
        kind = "run.started" if self.seq == 0 else "run.resumed"
        why = ("first start" if kind == "run.started"
               else f"resumed at the last checkpoint (owner changes after a crash: {crash_count})")

        def write(session: Session, repo: RunRepository) -> None:
            now = utcnow()
            repo.fenced_touch(self.run_id, self.fence, now, self.lease_s)
            self._event(repo, now, kind, chosen=f"agent version {self.run.agent_version}", why=why,
                        considered=[s.id for s in self.spec.steps])
            if kind == "run.started":
                self._later.append(lambda s: record_run_started(s, self.tenant_id, self.run.agent_name, at=now))

        self._committed(write, "begin")

    def _page(self, after: int) -> tuple[list[RunItem], dict[int, dict[int, StepCheckpoint]]]:
        def read(session: Session, repo: RunRepository) -> tuple[list[RunItem], dict[int, dict[int, StepCheckpoint]]]:
            items = list(repo.pending_items(self.run_id, after, ITEM_PAGE))
            found: dict[int, dict[int, StepCheckpoint]] = {}
            if items:
                for cp in repo.checkpoints_between(self.run_id, items[0].item_index, items[-1].item_index):
                    found.setdefault(cp.item_index, {})[cp.step_index] = cp
            session.expunge_all()
            return items, found

        return self._committed(read, "load items")

    def _item(self, item: RunItem, checkpoints: dict[int, StepCheckpoint]) -> None:
        context: dict[str, Any] = {"input": self.run.input, "item": item.input, "steps": {}}
        steps_used = item.steps_used
        llm_calls = item.llm_calls
        last_index = len(self.spec.steps) - 1
        for index, step in enumerate(self.spec.steps):
            cp = checkpoints.get(index)
            if cp is not None:
                if cp.step_id != step.id:
                    self._fail_run(NonDeterministicSpec(
                        f"checkpoint at item {item.item_index} step {index} is {cp.step_id!r} but the pinned "
                        f"spec says {step.id!r}"))
                context["steps"][step.id] = {"output": cp.output}
                steps_used += 1
                continue
            bound = self._bound_exceeded(step, steps_used, llm_calls)
            if bound is not None:
                self._item_failed(item, index, step, StepFailed("budget", bound, action="escalate"), 0.0,
                                  steps_used, llm_calls)
                return
            started = time.perf_counter()
            start_attempt = item.next_attempt if index == len(checkpoints) else 1
            try:
                self._approval_gate(item, index, step, context)
                outcome, key = self._call(item, index, step, context, start_attempt)
            except RetryLater as later:
                self._defer(item, index, step, later.delay_s, later.next_attempt, later.reason,
                            later.details.get("attempts"))
            except StepFailed as failure:
                failure = self._apply_dependency_policy(item, index, step, failure)
                self._item_failed(item, index, step, failure, (time.perf_counter() - started) * 1000,
                                  steps_used + 1, llm_calls + int(failure.details.get("llm_calls", 0)))
                if failure.details.get("stop_run"):
                    self._finish("budget_exhausted", failure.reason, "budget")
                    raise _Stop("budget exhausted") from failure
                return
            steps_used += 1
            llm_calls += outcome.llm_calls
            latency_ms = (time.perf_counter() - started) * 1000
            self._checkpoint(item, index, step, outcome, key, latency_ms, index == last_index, steps_used, llm_calls)
            STEP_SECONDS.observe(latency_ms / 1000)
            STEPS.labels("succeeded", "").inc()
            self._stats.add(step.id, ok=True, retries=outcome.attempts - 1, latency_ms=latency_ms)
            context["steps"][step.id] = {"output": outcome.output}

    def _bound_exceeded(self, step: Step, steps_used: int, llm_calls: int) -> str | None:
        autonomy = self.spec.autonomy
        if steps_used >= autonomy.max_steps:
            return f"autonomy bound max_steps={autonomy.max_steps} reached"
        if (step.llm is not None or step.agent is not None) and llm_calls >= autonomy.max_llm_calls:
            return f"autonomy bound max_llm_calls={autonomy.max_llm_calls} reached"
        if utcnow() > self.run_deadline:
            return f"autonomy bound max_duration_s={autonomy.max_duration_s} exceeded"
        return None

    def _side_effect(self, step: Step) -> bool:
        if step.side_effect is not None:
            return step.side_effect
        if step.tool is None:
            return False
        try:
            return bool(self.toolbox.tool(step.tool).side_effect)
        except StepFailed:
            return False

    def _call(self, item: RunItem, index: int, step: Step, context: dict[str, Any],
              start_attempt: int) -> tuple[StepOutcome, str | None]:
        if step.tool is not None:
            tool = self.toolbox.tool(step.tool)
            side_effect = self._side_effect(step)
            key = self._ledger_intent(item, index, step, bool(tool.idempotent)) if side_effect else None
            outcome = run_tool_step(self.toolbox, self.run_id, item.item_index, step, context, key, start_attempt)
            return outcome, key
        if step.llm is not None:
            return run_llm_step(self.toolbox, step, context), None
        return self._agent_loop(item, index, step, context), None

    def _agent_loop(self, item: RunItem, index: int, step: Step, context: dict[str, Any]) -> StepOutcome:
        """A bounded tool-calling loop: the model picks one of the step's tools (a subset of the scope)
        or answers ``final``; each tool call is checkpointed (replayed, never repeated, on resume),
        validated, and side effects go through the ledger with their own idempotency key."""
        loop = step.agent
        assert loop is not None
        tool_list = ", ".join(loop.tools)
        prompt = str(render(loop.prompt, context))
        messages = [Message("system", str(render(loop.system, context)))] if loop.system else []
        messages.append(Message("user", f"{prompt}\n\nTools you may call: {tool_list}. Reply with JSON only: "
                                        '{"tool": "<name>", "args": {...}, "why": "..."} to call a tool, or '
                                        '{"final": <answer>, "why": "..."} when done.'))
        params = ModelParams(options=dict(loop.sandbox or {}))
        log = LlmLog()
        replay = {c.iteration: c for c in self._committed(
            lambda _s, r: list(r.loop_calls(self.run_id, item.item_index, index)), "load loop calls")}
        for iteration in range(1, loop.max_iterations + 1):
            recorded = replay.get(iteration)
            if recorded is not None:  # checkpointed before a crash: feed the model the same history
                messages += [Message("assistant", recorded.reply),
                             Message("user", f"Tool {recorded.tool} returned: {json.dumps(recorded.output)}")]
                continue
            text, chosen_model, _ = ask_models(self.toolbox, params, [loop.model, *loop.fallbacks], messages,
                                               iteration, log)
            try:
                action = json.loads(text)
                if not isinstance(action, dict):
                    raise TypeError("not an object")
            except (json.JSONDecodeError, TypeError):
                messages += [Message("assistant", text), Message("user", "Reply with one JSON object only.")]
                continue
            if "final" in action:
                output = action["final"]
                verdicts = validate_output(step, output, context)
                return StepOutcome(output=output, considered=[*loop.tools, "final"], chosen="final",
                                   why=str(action.get("why") or f"model {chosen_model!r} finished after "
                                       f"{iteration - 1} tool call(s)"), verdicts=log.usage + verdicts,
                                   attempts=iteration, llm_calls=log.calls, cost_usd=log.cost,
                                   input_hash_source=prompt)
            tool_name, args = str(action.get("tool", "")), action.get("args", {})
            if tool_name not in loop.tools:
                raise StepFailed("scope", f"agent loop chose tool {tool_name!r}, not among its tools ({tool_list})",
                                 action="fail", details={"kind": "tool", "target": tool_name, "llm_calls": log.calls})
            output = self._loop_tool_call(item, index, step, iteration, tool_name, args, text, action)
            messages += [Message("assistant", text),
                         Message("user", f"Tool {tool_name} returned: {json.dumps(output, default=str)}")]
        raise StepFailed("budget", f"agent loop did not finish within max_iterations={loop.max_iterations}",
                         action="escalate", details={"llm_calls": log.calls})

    def _loop_tool_call(self, item: RunItem, index: int, step: Step, iteration: int, tool_name: str, args: Any,
                        reply: str, action: dict[str, Any]) -> Any:
        """One tool call of an agent loop: ledger for side effects, validation, a checkpoint and an event."""
        tool = self.toolbox.tool(tool_name)
        key = None
        if tool.side_effect:
            key = self._ledger_intent(item, index, step, bool(tool.idempotent), suffix=f".{iteration}",
                                      tool_name=tool_name)
        started = time.perf_counter()
        call = ToolCall(tenant_id=self.tenant_id, run_id=self.run_id, item_index=item.item_index, step_id=step.id,
                        args=args, idempotency_key=key)
        output = tool.call_detailed(call).value if hasattr(tool, "call_detailed") else tool.call(call)
        latency_ms = (time.perf_counter() - started) * 1000

        def write(_s: Session, repo: RunRepository) -> None:
            now = utcnow()
            repo.fenced_touch(self.run_id, self.fence, now, self.lease_s)
            repo.add_loop_call({"run_id": self.run_id, "item_index": item.item_index, "step_index": index,
                                "iteration": iteration, "tool": tool_name, "args": redact(args), "reply": reply,
                                "output": output, "fence": self.fence, "created_at": now})
            self._event(repo, now, "agent.tool_call", item_index=item.item_index, step_index=index, step_id=step.id,
                        considered=[*step.agent.tools, "final"] if step.agent else None, chosen=tool_name,
                        why=str(action.get("why") or f"iteration {iteration}"), latency_ms=latency_ms,
                        input_hash=sha256_hex(args), output_hash=sha256_hex(output))
            if key is not None:
                repo.update_side_effect(key, state="succeeded", outcome=redact(output), completed_at=now)

        self._committed(write, "loop call")
        return output

    def _release(self, session: Session, repo: RunRepository, now: datetime, **values: Any) -> bool:
        """Give the lease (and the tenant's concurrency slot) back, in the caller's transaction."""
        released = repo.release(self.run_id, self.fence, now, **values)
        if released:
            release_slot(session, self.tenant_id, self.run_id)
            self._flush_stats(now, force=True)
        return released

    def _approval_gate(self, item: RunItem, index: int, step: Step, context: dict[str, Any]) -> None:
        """Hold a risky action for a human: returns to proceed, raises _Stop to wait, StepFailed if denied."""
        rules = self.spec.autonomy.approvals
        if not rules:
            return
        action, args = self._pending_action(step, context)
        data = {**context, "step": {"id": step.id, "kind": step.kind, "tool": step.tool or "", "args": args}}
        matched = None
        for rule in rules:
            try:
                if compile_rule(rule.when).evaluate(data):
                    matched = rule
                    break
            except RuleError as exc:
                raise StepFailed("validation", f"approval rule {rule.when!r} could not be evaluated: {exc}",
                                 action="escalate") from exc
        if matched is None:
            return
        args_hash = sha256_hex({"action": action, "args": args})
        verdict = self._committed(lambda s, r: self._approval_verdict(s, r, item, index, step, action, args,
                                                                      args_hash, matched), "approval gate")
        if verdict == "proceed":
            return
        if verdict == "wait":
            raise _Stop("waiting for approval")
        raise StepFailed("approval", verdict, action="fail")

    def _approval_verdict(self, session: Session, repo: RunRepository, item: RunItem, index: int, step: Step,
                          action: str, args: Any, args_hash: str, rule: Any) -> str:
        """In one fenced transaction: 'proceed', 'wait' (approval requested, run released) or a denial reason."""
        now = utcnow()
        repo.fenced_touch(self.run_id, self.fence, now, self.lease_s)
        approvals = ApprovalRepository(session, self.tenant_id)
        latest = approvals.latest_for(self.run_id, item.item_index, index)
        where = {"item_index": item.item_index, "step_index": index, "step_id": step.id}
        if latest is not None and latest.state in ("approved", "consumed") and latest.args_hash == args_hash:
            if latest.state == "approved":
                approvals.transition(latest.id, from_state="approved", state="consumed")
                self._event(repo, now, "approval.granted", **where, chosen=action,
                            considered=["call", "wait", "deny"], why=f"approved by {latest.decided_by}"
                            + (f": {latest.comment}" if latest.comment else "") + f" (rule {rule.when!r})")
            return "proceed"
        if latest is not None and latest.state == "rejected":
            return f"approval {latest.id} rejected by {latest.decided_by}" + (
                f": {latest.comment}" if latest.comment else "")
        if latest is not None and latest.state == "expired":
            if latest.on_timeout == "approve":
                approvals.transition(latest.id, from_state="expired", state="consumed")
                self._event(repo, now, "approval.granted", **where, chosen=action, considered=["call", "deny"],
                            why=f"approval {latest.id} expired with on_timeout: approve")
                return "proceed"
            return f"approval {latest.id} expired without a decision (on_timeout: deny)"
        if latest is not None and latest.state == "pending" and latest.args_hash == args_hash:
            seq = latest.seq  # woken early: keep waiting on the same request
        else:
            if latest is not None:  # approved for other arguments: that approval is not valid for these
                approvals.transition(latest.id, from_state=latest.state, state="superseded")
                self._event(repo, now, "approval.invalidated", **where, chosen="request a new approval",
                            considered=["call", "request a new approval"],
                            why=f"approval {latest.id} was for different arguments (hash mismatch)")
            seq = (latest.seq + 1) if latest is not None else 1
            approval = request_approval(session, self.tenant_id, ApprovalRequest(
                run_id=self.run_id, agent_name=self.run.agent_name, item_index=item.item_index, step_index=index,
                step_id=step.id, action=action, args=redact(args), args_hash=args_hash, rule=rule.when,
                route=rule.route, timeout_s=rule.timeout_s, on_timeout=rule.on_timeout, seq=seq), now)
            self._event(repo, now, "approval.requested", **where, chosen="wait for a human",
                        considered=["call", "wait for a human"],
                        why=f"rule {rule.when!r} matched; routed to {rule.route}, expires in {rule.timeout_s}s "
                            f"(on_timeout: {rule.on_timeout}); approval {approval.id}")
        self._release(session, repo, now, wake_at=None, state="waiting_approval",
                      reason=f"waiting for approval of {action} (item {item.item_index}, step {step.id})")
        return "wait"

    def _pending_action(self, step: Step, context: dict[str, Any]) -> tuple[str, Any]:
        """What the step is about to do, as an approver sees it: the tool (or model) and rendered arguments."""
        from runner.templating import render

        try:
            if step.tool is not None:
                return step.tool, render(step.args, context)
            if step.llm is not None:
                return f"llm:{step.llm.model}", {"prompt": render(step.llm.prompt, context)}
        except TemplateError as exc:
            raise StepFailed("validation", f"args: {exc}", action="escalate") from exc
        return f"agent:{step.id}", {}

    def _apply_dependency_policy(self, item: RunItem, index: int, step: Step, failure: StepFailed) -> StepFailed:
        """Map a dependency failure to the step's ``on_dependency_failure`` (default: escalate for side
        effects; otherwise the tool's own retries already ran, then escalate). A tripped breaker with
        policy ``retry`` waits for its next probe instead of failing."""
        if failure.category != "dependency":
            return failure
        policy = step.on_dependency_failure or ("escalate" if self._side_effect(step) else "retry")
        retry_at = failure.details.get("breaker_retry_at")
        if policy == "retry" and retry_at:
            delay = max(0.5, float(retry_at) - time.time())
            self._defer(item, index, step, delay, item.next_attempt, failure.reason, failure.details.get("attempts"))
        action: FailureAction = {"retry": "escalate", "fallback": "escalate", "escalate": "escalate",
                                 "fail": "fail", "skip_item": "skip_item"}[policy]  # type: ignore[assignment]
        return StepFailed(failure.category, f"{failure.reason} (on_dependency_failure: {policy})", action=action,
                          attempts=failure.attempts, details=failure.details)

    def _defer(self, item: RunItem, index: int, step: Step, delay_s: float, next_attempt: int, reason: str,
               attempts: Any) -> None:
        """Release the worker for a long backoff: remember the attempt number, wake up after ``delay_s``."""

        def write(session: Session, repo: RunRepository) -> None:
            now = utcnow()
            repo.fenced_touch(self.run_id, self.fence, now, self.lease_s)
            repo.set_item_attempt(self.run_id, item.item_index, next_attempt)
            self._event(repo, now, "step.deferred", item_index=item.item_index, step_index=index, step_id=step.id,
                        considered=["sleep in the worker", "release the worker and wake up later"],
                        chosen=f"wake up in {delay_s:.1f}s (attempt {next_attempt} next)", why=reason,
                        verdicts=attempts, failure_category="dependency")
            if self._release(session, repo, now, wake_at=now + timedelta(seconds=delay_s + 30)):
                enqueue_after_commit(session, EXECUTE_RUN, delay_s=delay_s, tenant_id=self.tenant_id,
                                     run_id=self.run_id)

        self._committed(write, "defer")
        raise _Stop(f"deferred {delay_s:.1f}s: {reason}")

    def _ledger_intent(self, item: RunItem, index: int, step: Step, idempotent: bool, *, suffix: str = "",
                       tool_name: str | None = None) -> str:
        """Record the intent (and commit) before a side effect; decide what an earlier intent means."""
        key = f"mw-{self.run_id}-{item.item_index}-{index}{suffix}"
        tool_name = tool_name or step.tool or ""

        def write(_s: Session, repo: RunRepository) -> str:
            now = utcnow()
            repo.fenced_touch(self.run_id, self.fence, now, self.lease_s)
            existing = repo.side_effect(key)
            if existing is None:
                repo.record_intent({"idempotency_key": key, "run_id": self.run_id, "item_index": item.item_index,
                                    "step_index": index, "step_id": step.id, "tool": tool_name,
                                    "state": "intent", "attempts": 1, "created_at": now})
                return "new"
            if existing.state in ("intent", "unknown") and not idempotent:
                repo.update_side_effect(key, state="unknown")
                return "unknown"
            repo.update_side_effect(key, state="intent", attempts=existing.attempts + 1)
            self._event(repo, now, "side_effect.retried", item_index=item.item_index, step_index=index,
                        step_id=step.id, chosen=tool_name, considered=["retry with the same key", "escalate"],
                        why=f"earlier attempt's outcome unknown ({existing.state}); the tool is idempotent, so "
                            f"it is retried with the same idempotency key")
            return "retry"

        verdict = self._committed(write, "ledger intent")
        if verdict == "unknown":
            raise StepFailed("state", f"unknown_outcome: a call to non-idempotent tool {tool_name} may have "
                             f"happened before a crash (idempotency key {key}); a human must check",
                             action="escalate", details={"idempotency_key": key})
        return key

    def _checkpoint(self, item: RunItem, index: int, step: Step, outcome: StepOutcome, key: str | None,
                    latency_ms: float, last: bool, steps_used: int, llm_calls: int) -> None:
        output_hash = sha256_hex(outcome.output)

        def write(session: Session, repo: RunRepository) -> bool:
            now = utcnow()
            event = self._event_row(now, "step.succeeded", item_index=item.item_index, step_index=index,
                                    step_id=step.id, considered=outcome.considered, chosen=outcome.chosen,
                                    why=outcome.why, verdicts=outcome.verdicts or None, cost_usd=outcome.cost_usd,
                                    latency_ms=latency_ms, input_hash=sha256_hex(outcome.input_hash_source),
                                    output_hash=output_hash)
            cancel = repo.write_step(
                self.run_id, self.fence, now, self.lease_s,
                counters={"steps_done": 1, "items_done": int(last), "llm_calls": outcome.llm_calls,
                          "cost_usd": outcome.cost_usd},
                checkpoint={"run_id": self.run_id, "item_index": item.item_index, "step_index": index,
                            "step_id": step.id, "status": "succeeded", "output": outcome.output,
                            "output_hash": output_hash, "attempts": outcome.attempts,
                            "latency_ms": round(latency_ms, 3), "fence": self.fence, "created_at": now},
                event=event,
                finish_item={"item_index": item.item_index, "state": "done", "now": now, "steps_used": steps_used,
                             "llm_calls": llm_calls} if last else None,
                side_effect=(key, {"state": "succeeded", "outcome": redact(outcome.output), "completed_at": now})
                if key is not None else None,
                durable=key is not None or step.tool is None)  # pure tool steps may skip the WAL flush wait
            self._flush_stats(now)
            if item.next_attempt != 1:
                repo.set_item_attempt(self.run_id, item.item_index, 1)
                item.next_attempt = 1
            return cancel

        if self._committed(write, "checkpoint"):
            self._finish("cancelled", "cancelled by request", None)
            raise _Stop("cancelled")

    def _item_failed(self, item: RunItem, index: int, step: Step, failure: StepFailed, latency_ms: float,
                     steps_used: int, llm_calls: int) -> None:
        state = {"escalate": "escalated", "fail": "failed", "skip_item": "skipped"}[failure.action]
        STEPS.labels("failed", failure.category).inc()

        def write(session: Session, repo: RunRepository) -> bool:
            now = utcnow()
            self._stats.add(step.id, ok=False, retries=failure.attempts - 1, latency_ms=latency_ms)
            self._flush_stats(now, force=True)
            cancel = repo.fenced_touch(self.run_id, self.fence, now, self.lease_s, steps=0,
                                       items_done=int(state == "skipped"), items_failed=int(state != "skipped"),
                                       llm_calls=int(failure.details.get("llm_calls", 0)))
            self._event(repo, now, "step.failed", item_index=item.item_index, step_index=index, step_id=step.id,
                        considered=failure.details.get("considered") or [state, "retry"],
                        chosen=state, why=failure.reason,
                        verdicts=failure.details.get("verdicts") or failure.details.get("attempts"),
                        failure_category=failure.category, latency_ms=latency_ms)
            key = failure.details.get("idempotency_key")
            if key:
                repo.update_side_effect(str(key), state="unknown")
            repo.finish_item(self.run_id, item.item_index, state, now, reason=failure.reason,
                             category=failure.category, steps_used=steps_used, llm_calls=llm_calls)
            if failure.category == "scope":
                details = failure.details
                kind = str(details.get("kind") or "host")
                target = str(details.get("target") or details.get("host") or details.get("url") or "")
                record_violation(session, self.tenant_id, run_id=self.run_id, agent_name=self.run.agent_name,
                                 step_id=step.id, kind=kind, target=target, reason=failure.reason, at=now)
                record_audit(session, self.tenant_id, actor="runner", role="runner", action="scope.violation",
                             target=self.run_id, details={"kind": kind, "name": target, "step_id": step.id})
            return cancel

        log.warning("step_failed", run_id=self.run_id, item=item.item_index, step=step.id,
                    category=failure.category, reason=failure.reason)
        if self._committed(write, "item failure"):
            self._finish("cancelled", "cancelled by request", None)
            raise _Stop("cancelled")

    def _fail_run(self, error: NonDeterministicSpec) -> None:
        self._finish("failed", str(error), "state", code=error.code)
        raise _Stop("non-deterministic spec")

    def _hand_back(self, why: str) -> None:
        """Release the lease and re-enqueue, so this or another worker continues at the next item."""

        def write(session: Session, repo: RunRepository) -> None:
            now = utcnow()
            if self._release(session, repo, now, wake_at=now + wake_grace()):
                enqueue_after_commit(session, EXECUTE_RUN, tenant_id=self.tenant_id, run_id=self.run_id)

        self._committed(write, "hand back")
        log.info("run_handed_back", run_id=self.run_id, why=why)

    def _complete(self) -> None:
        def outcomes(_s: Session, repo: RunRepository) -> dict[str, int]:
            return repo.item_outcomes(self.run_id)

        counts = self._committed(outcomes, "outcomes")
        total = sum(counts.values())
        for state in ("failed", "escalated"):
            if counts.get(state, 0):
                first = self._first_problem(state)
                reason = first.reason if first else ""
                if total > 1:
                    where = first.item_index if first else "?"
                    reason = f"{counts[state]} of {total} items {state}; first (item {where}): {reason}"
                self._finish(state, reason or state, first.failure_category if first else None)
                return
        self._finish("succeeded", None, None)

    def _first_problem(self, state: str) -> RunItem | None:
        def read(session: Session, repo: RunRepository) -> RunItem | None:
            found = repo.items(self.run_id, after=None, limit=1, state=state)
            if found:
                session.expunge(found[0])
            return found[0] if found else None

        return self._committed(read, "first problem")

    def fail_exhausted(self, reason: str) -> None:
        """Give up on a run whose workers keep vanishing (poison run)."""
        try:
            self._finish("failed", reason, "internal", code="redelivery_exhausted")
        finally:
            self._discard_session()

    def _finish(self, state: str, reason: str | None, category: str | None, code: str | None = None) -> None:
        def write(session: Session, repo: RunRepository) -> None:
            now = utcnow()
            repo.fenced_touch(self.run_id, self.fence, now, self.lease_s)
            self._event(repo, now, f"run.{state}", chosen=state, why=reason or "every item completed",
                        failure_category=category, considered=[code] if code else None)
            self._release(session, repo, now, wake_at=None, state=state, reason=reason, category=category,
                          finished=True)
            run = repo.get(self.run_id)
            assert run is not None
            started_at, cost = run.started_at, run.cost_usd
            self._later.append(lambda s: record_run_finished(
                s, self.tenant_id, self.run.agent_name, self.run_id, state=state, category=category, reason=reason,
                started_at=started_at, finished_at=now, cost_usd=cost))
            if state in ("failed", "escalated"):  # webhook outbox: sent only if this commit lands
                emit(session, self.tenant_id, f"run.{state}", {"run_id": self.run_id, "agent": self.spec.name,
                                                               "state": state, "reason": reason,
                                                               "failure_category": category})

        self._committed(write, "finish")
        RUNS_FINISHED.labels(state).inc()
        log.info("run_finished", run_id=self.run_id, tenant_id=self.tenant_id, state=state, reason=reason)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def execute_run(settings: Settings, tenant_id: str, run_id: str) -> None:
    """Take the run's lease and work on it for one time slice. Safe to call with duplicate messages."""

    def acquire() -> tuple[Any, Run, AgentSpec, tuple[int, str] | None] | None:
        with unit_of_work() as session:
            repo = RunRepository(session, tenant_id)
            now = utcnow()
            lease = repo.acquire_lease(run_id, _owner(), now, settings.lease_seconds)
            if lease is None:
                return None
            run = repo.get(run_id)
            assert run is not None
            if not acquire_slot(session, tenant_id, run_id, ttl_s=SLOT_TTL_S):
                # The tenant is at its concurrent-runs limit: hand the run back with a delay instead of
                # holding a worker, so one tenant's flood never starves another's runs.
                waited = (now - run.created_at).total_seconds()
                delay = slot_retry_delay_s(min(6, int(waited // 5) + 1))
                repo.release(run_id, lease.fence, now, wake_at=now + timedelta(seconds=delay + 30),
                             state="queued", reason="waiting for a concurrency slot (concurrent_runs limit)")
                enqueue_after_commit(session, EXECUTE_RUN, delay_s=delay, tenant_id=tenant_id, run_id=run_id)
                return None
            version = AgentRepository(session, tenant_id).version_by_id(run.agent_version_id)
            assert version is not None
            import json

            spec = _spec_for(version.id, json.dumps(version.spec, sort_keys=True))
            last = repo.last_event(run_id)
            session.expunge(run)
            return lease, run, spec, last

    got = with_db_retry(acquire, "acquire lease")
    if got is None:
        log.debug("run_not_available", run_id=run_id)
        return
    lease, run, spec, last = got
    execution = _Execution(settings, tenant_id, run, spec, lease.fence, last)
    if lease.crash_count > settings.max_redeliveries:
        with suppress(LeaseLost):
            execution.fail_exhausted(f"redelivery_exhausted: the run's worker vanished {lease.crash_count} times "
                                    f"(limit {settings.max_redeliveries})")
        return
    execution.execute(lease.crash_count)
