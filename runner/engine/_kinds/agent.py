"""The ``agent`` kind: a bounded loop in which a model calls the step's tools natively, then answers.

Each iteration is one model turn (its fallbacks on dependency failures). The step's tools are offered
as :class:`~runner.providers.base.ToolSpec` s (name, description, argument schema) under
``tool_choice: auto`` (``none`` on the last iteration: the model must answer), and the step's
``output_schema`` asks for the structured answer. The tool calls of a turn run one by one, in order,
each governed like a spec step:

1. **scope**: a tool that is not among the step's tools fails the item as ``scope`` and is recorded
   as a violation, whatever a tool result told the model;
2. **arguments** are checked against the tool's schema; invalid ones go back to the model as the
   call's error result (never to the tool), bounded by the loop's iterations;
3. **autonomy**: every tool call is a step execution (``max_steps``), every model call counts against
   ``max_llm_calls``; ``max_duration_s`` and ``max_cost_usd`` hold as for any step;
4. **approval**: the agent's approval rules see the call as ``step.tool`` / ``step.args``; a match
   waits for a human (the worker is released) and resumes at that call;
5. the side-effect ledger (key ``mw-<run>-<item>-<step>.<iteration>.<call>``), the call, its checkpoint.

Results go back as tool-result messages: the output as JSON data in the provider's tool-result slot,
size-capped with a hash, never spliced into instructions. Every model turn is checkpointed before
its calls run (in one commit with the budget ledger's charge for it), and every call after it ran, so
a resumed loop rebuilds the conversation exactly from its checkpoints and continues at the first call
without one: no turn is asked for twice, no checkpointed call is repeated.
"""

from __future__ import annotations

import dataclasses
import json
import time
from decimal import Decimal
from typing import Any

from runner.engine._kinds import PendingAction, StepContext, StepOutcome
from runner.engine._kinds.tool import call_tool, render_or_fail
from runner.engine._models import LlmLog, ModelParams, ask_models
from runner.engine._registry import LlmReservation
from runner.engine._validate import validate_output
from runner.errors import StepFailed, ToolArgsInvalid
from runner.providers.base import Message, ModelResponse, ToolCallRequest, ToolChoice, ToolSpec
from runner.providers.finish import finish_failure
from runner.providers.tool_args import tool_spec, validate_call
from runner.spec import AgentLoop
from runner.tools.base import ToolCall
from tenants.kit.ids import sha256_hex
from tenants.kit.logging import redact
from tenants.kit.tracing import tool_span

__all__ = ["AgentKind", "call_action"]

_ACTION_MAX = 120  # approvals.action
_SHOWN = 500  # characters of model text in a decision event
_RAW_ARGS_KEPT = 2_000  # characters of unparseable arguments kept in a checkpoint


def call_action(tool: str, iteration: int, index: int) -> str:
    """What an approver sees as the action of a model-chosen call: the tool and the call's place in the loop
    (each call has its own approvals, so an approval is never reused by a later, identical call)."""
    suffix = f" (agent call {iteration}.{index})"
    return tool[: _ACTION_MAX - len(suffix)] + suffix


class AgentKind:
    """``agent: {model, prompt, tools, max_iterations, ...}``."""

    def pending_action(self, ctx: StepContext) -> PendingAction:
        return PendingAction(f"agent:{ctx.step.id}", {})

    def run(self, ctx: StepContext, pending: PendingAction) -> StepOutcome:
        return _Loop(ctx).run()


class _Loop:
    """One execution of an agent step (see the module docstring)."""

    def __init__(self, ctx: StepContext) -> None:
        assert ctx.step.agent is not None
        self.ctx = ctx
        self.step = ctx.step
        self.loop: AgentLoop = ctx.step.agent
        self.log = LlmLog()
        self.prompt = str(render_or_fail(self.loop.prompt, ctx.context, "prompt"))
        self.messages: list[Message] = []
        if self.loop.system:
            self.messages.append(Message.system(str(render_or_fail(self.loop.system, ctx.context, "system"))))
        self.messages.append(Message.user(self.prompt))
        self.specs: tuple[ToolSpec, ...] = ()
        self.calls = 0  # tool calls made by this step (replayed ones included): step executions
        self.replayed_llm_calls = 0
        self.replayed_cost = Decimal(0)
        self.recorded_llm_calls = 0  # model calls of this slice already counted by their turn's commit
        self.first_call = True  # the first call made in this slice continues a deferred attempt
        self.rejected = 0  # final answers rejected by output_schema or rules (on_invalid.retry)

    # ---- totals ------------------------------------------------------------------------------
    @property
    def llm_calls(self) -> int:
        return self.replayed_llm_calls + self.log.calls

    @property
    def cost(self) -> Decimal:
        return self.replayed_cost + self.log.cost

    def _failed(self, failure: StepFailed) -> StepFailed:
        """``failure`` with what the step spent so far, and what of it is already on the run's counters."""
        failure.details.update({
            "llm_calls": self.llm_calls, "cost_usd": str(self.cost), "steps": 1 + self.calls,
            "recorded_llm_calls": self.replayed_llm_calls + self.recorded_llm_calls,
            "recorded_cost_usd": str(self.cost)})  # every answered call is charged in its turn's commit
        if self.log.usage or self.log.verdicts:
            failure.details.setdefault("verdicts", self.log.verdicts + self.log.usage)
        return failure

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> StepOutcome:
        try:
            self.specs = tuple(tool_spec(self.ctx.toolbox.tool(name)) for name in self.loop.tools)
            iteration, last = self._replay()
            if last is not None:
                if not last[0].tool_calls:  # answered before a crash: the same answer, not a new call
                    outcome = self._answer(last[0].content, last[1], iteration)
                    if outcome is not None:
                        return outcome
                else:
                    self._calls(iteration, last[0].tool_calls, last[2])
            first = iteration + 1  # the first turn of this slice
            while True:
                iteration += 1
                if iteration > first:
                    self.ctx.services.at_checkpoint()
                response, alias = self._ask(iteration)
                if response.tool_calls:
                    self._calls(iteration, response.tool_calls, 0)
                    continue
                outcome = self._answer(response.text, alias, iteration)
                if outcome is not None:
                    return outcome
        except StepFailed as failure:
            raise self._failed(failure) from None

    def _answer(self, text: str, alias: str, iteration: int) -> StepOutcome | None:
        """The final answer's outcome; None when it was rejected and the model may try again (``on_invalid.retry``
        times, within ``max_iterations``: the rejection goes back to it as a user message)."""
        try:
            return self._final(text, alias, iteration)
        except StepFailed as rejected:
            if self.rejected >= self.step.on_invalid.retry or iteration >= self.loop.max_iterations:
                then = self.step.on_invalid.then
                raise StepFailed("validation", rejected.reason, action="fail" if then == "fail" else "escalate",
                                 attempts=self.rejected + 1, details=rejected.details) from None
            self.log.verdicts.extend(rejected.details.get("verdicts") or [{"check": "parse", "ok": False,
                                                                           "message": rejected.reason}])
            self._reject(rejected.reason)
            return None

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.messages.append(Message.user(f"Your answer was rejected: {reason}. Answer again."))

    def _replay(self) -> tuple[int, tuple[Message, str, int] | None]:
        """Rebuild the conversation from the step's checkpoints: (last iteration, (its assistant message, the
        alias that answered, calls of it already done)), or (0, None) for a fresh start."""
        iteration, last = 0, None
        for row in self.ctx.services.loop_calls(self.ctx):
            if row.call_index == 0:
                if last is not None and not last[0].tool_calls:  # that answer was rejected: say so again
                    self._reject(self._rejection(last[0].content))
                message = Message.from_dict(json.loads(row.message or "{}"))
                self.messages.append(message)
                self.replayed_llm_calls += row.llm_calls
                self.replayed_cost += Decimal(row.cost_usd or 0)
                iteration, last = row.iteration, (message, row.model or self.loop.model, 0)
            elif last is not None:
                self.messages.append(Message("tool", row.message or "", tool_call_id=row.call_id, name=row.tool,
                                             is_error=row.is_error))
                self.calls += 1
                last = (last[0], last[1], row.call_index)
        return iteration, last

    def _rejection(self, text: str) -> str:
        """Why a replayed answer was rejected (validation is deterministic: the same reason as the first time)."""
        try:
            self._final(text, "", 0)
        except StepFailed as rejected:
            return rejected.reason
        return "the answer was not accepted"

    def _ask(self, iteration: int) -> tuple[ModelResponse, str]:
        """One model turn, settled and checkpointed in one commit before anything else happens."""
        ctx, loop = self.ctx, self.loop
        bound = ctx.services.autonomy_bound(ctx.steps_used, ctx.llm_calls + self.llm_calls, model_call=True)
        if bound is not None:
            raise StepFailed("budget", bound, action="escalate")
        choice: ToolChoice = "none" if iteration >= loop.max_iterations else "auto"
        params = ModelParams(loop.max_tokens, loop.temperature, dict(loop.sandbox or {}), self.step.output_schema,
                             self.specs, choice)
        calls_before, verdicts_before = self.log.calls, len(self.log.verdicts)
        conversation_hash = sha256_hex([m.to_dict() for m in self.messages])

        def settle(hold: LlmReservation, response: ModelResponse, alias: str) -> Decimal:
            calls = self.log.calls - calls_before  # fallbacks that failed first count too
            message = response.assistant_message()
            usable = finish_failure(response, alias, max_tokens=loop.max_tokens) is None
            values = {"iteration": iteration, "call_index": 0, "model": alias,
                      "message": json.dumps(message.to_dict(), ensure_ascii=False)} if usable else None
            usage = response.usage
            verdicts = [*self.log.verdicts[verdicts_before:], {
                "check": "model_call", "model": alias, "provider": response.provider, "ok": True,
                "input_tokens": usage.input_tokens, "cached_input_tokens": usage.cached_input_tokens,
                "output_tokens": usage.output_tokens, "finish_reason": response.finish_reason,
                "tool_calls": len(response.tool_calls)}]
            names = [c.name for c in response.tool_calls]
            chosen = ("call " + ", ".join(names))[:_SHOWN] if names and usable else (
                "final" if usable else f"stopped: {response.finish_reason}")
            event = {"kind": "agent.model_turn", "considered": [*loop.tools, "final"], "chosen": chosen,
                     "why": ((response.text if names else response.refusal) or "")[:_SHOWN] or
                     f"model {alias!r}, turn {iteration}: " + (f"{len(names)} tool call(s)" if names else
                                                               f"answer ({response.finish_reason})"),
                     "verdicts": verdicts, "latency_ms": response.latency_ms, "attempts": calls,
                     "input_hash": conversation_hash, "output_hash": sha256_hex(message.to_dict())}
            charged = ctx.services.record_model_turn(ctx, hold, response, values, event, calls)
            self.recorded_llm_calls += calls
            return charged

        response, alias, _ = ask_models(ctx.toolbox, params, [loop.model, *loop.fallbacks], self.messages,
                                        iteration, self.log, settle=settle)
        self.messages.append(response.assistant_message())
        return response, alias

    def _calls(self, iteration: int, calls: tuple[ToolCallRequest, ...], done: int) -> None:
        """Run the turn's calls from ``done`` on (fewer than all of them only when resuming mid-turn)."""
        if iteration >= self.loop.max_iterations:
            raise StepFailed("budget", f"agent loop did not finish within max_iterations={self.loop.max_iterations}"
                             f": the model still asked for {len(calls)} tool call(s) on its last turn",
                             action="escalate")
        for index in range(done, len(calls)):
            if index > done:
                self.ctx.services.at_checkpoint()
            self._call(iteration, index + 1, calls[index], len(calls))

    def _call(self, iteration: int, index: int, call: ToolCallRequest, count: int) -> None:
        """One tool call the model asked for: scope, autonomy, arguments, approval, ledger, call, checkpoint."""
        ctx, loop = self.ctx, self.loop
        name = call.name
        if name not in loop.tools:
            raise StepFailed("scope", f"the model asked for tool {name[:200]!r}, which is not among this agent "
                             f"step's tools ({', '.join(loop.tools)}); the call was refused", action="fail",
                             details={"kind": "tool", "target": name[:_ACTION_MAX], "call_id": call.id})
        bound = ctx.services.autonomy_bound(ctx.steps_used + 1 + self.calls, ctx.llm_calls + self.llm_calls,
                                            model_call=False)
        if bound is not None:
            raise StepFailed("budget", bound, action="escalate")
        tool = ctx.toolbox.tool(name)
        started = time.perf_counter()
        where = f"turn {iteration}, call {index} of {count} (id {call.id})"
        try:
            args = validate_call(tool, call)
        except ToolArgsInvalid as bad:  # back to the model as the call's error; the tool is never called
            self._record(iteration, index, call, {"error": bad.reason}, None, started,
                         f"{where}: arguments rejected, returned to the model as an error",
                         [{"check": "arguments", "ok": False, "message": bad.reason}], error=True)
            return
        step_as_call = ctx.step.model_copy(update={"tool": name, "args": args, "agent": None})
        ctx.services.approve(dataclasses.replace(ctx, step=step_as_call),
                             PendingAction(call_action(name, iteration, index), args))
        key = None
        if tool.side_effect:
            key = ctx.services.ledger_intent(ctx, bool(tool.idempotent), suffix=f".{iteration}.{index}",
                                             tool_name=name)
        attempt = ctx.start_attempt if self.first_call else 1
        self.first_call = False
        request = ToolCall(tenant_id=ctx.tenant_id, run_id=ctx.run_id, item_index=ctx.item_index,
                           step_id=ctx.step.id, args=args, idempotency_key=key)
        try:
            with tool_span(tool=name, side_effect=key is not None, idempotency_key=key, attempt=attempt):
                output, attempts = call_tool(tool, request, attempt)
            output = ctx.toolbox.mask(output)  # an echoed secret reaches neither the model nor the checkpoint
        except StepFailed as failure:
            if key is not None:
                failure.details.setdefault("idempotency_key", key)
            raise
        self._record(iteration, index, call, output, key, started, where,
                     [{"check": "arguments", "ok": True}, *attempts])

    def _record(self, iteration: int, index: int, call: ToolCallRequest, output: Any, key: str | None,
                started: float, why: str, verdicts: list[dict[str, Any]], *, error: bool = False) -> None:
        """Checkpoint a call with the exact result the model gets (and a side effect's outcome), then append it."""
        result = Message.tool_result(call, output, is_error=error)
        args: Any = redact(call.arguments) if call.valid else {
            "raw_arguments": (call.raw_arguments or "")[:_RAW_ARGS_KEPT]}
        self.ctx.services.record_loop_call(
            self.ctx,
            {"iteration": iteration, "call_index": index, "call_id": call.id, "tool": call.name, "args": args,
             "message": result.content, "is_error": error, "idempotency_key": key},
            key, output,
            {"kind": "agent.tool_call", "considered": list(self.loop.tools), "chosen": call.name, "why": why,
             "verdicts": verdicts, "failure_category": "validation" if error else None,
             "latency_ms": (time.perf_counter() - started) * 1000, "input_hash": sha256_hex(call.arguments_json()),
             "output_hash": sha256_hex(output)})
        self.messages.append(result)
        self.calls += 1

    def _final(self, text: str, alias: str, iteration: int) -> StepOutcome:
        """The model's answer, parsed and validated like any step's output."""
        step = self.step
        if step.output_schema is None:
            output: Any = {"text": text}
        else:
            try:
                output = json.loads(text)
            except ValueError as exc:
                raise StepFailed("validation", f"the final answer is not JSON: {exc}") from exc
        verdicts = validate_output(step, output, self.ctx.context)
        return StepOutcome(
            output=output, considered=[*self.loop.tools, "final"], chosen="final",
            why=f"model {alias!r} answered after {self.calls} tool call(s) in {iteration} turn(s)",
            verdicts=self.log.verdicts + self.log.usage + verdicts, attempts=self.rejected + 1,
            llm_calls=self.llm_calls, cost_usd=self.cost,
            input_hash_source=self.prompt, steps=1 + self.calls, recorded_cost_usd=self.cost,
            recorded_llm_calls=self.replayed_llm_calls + self.recorded_llm_calls)
