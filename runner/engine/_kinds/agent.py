"""The ``agent`` kind: a bounded tool-calling loop. The model picks one of the step's tools (a subset of
the scope) or answers ``final``; each tool call is checkpointed (replayed, never repeated, on resume),
and side effects go through the ledger with their own idempotency key."""

from __future__ import annotations

import json
import time
from typing import Any

from runner.engine._kinds import PendingAction, StepContext, StepOutcome
from runner.engine._kinds.tool import call_tool, render_or_fail
from runner.engine._models import LlmLog, ModelParams, ask_models
from runner.engine._validate import validate_output
from runner.errors import StepFailed
from runner.providers.base import Message
from runner.tools.base import ToolCall
from tenants.kit.ids import sha256_hex
from tenants.kit.logging import redact

__all__ = ["AgentKind"]


class AgentKind:
    """``agent: {model, prompt, tools, max_iterations, ...}``."""

    def pending_action(self, ctx: StepContext) -> PendingAction:
        return PendingAction(f"agent:{ctx.step.id}", {})

    def run(self, ctx: StepContext, pending: PendingAction) -> StepOutcome:
        step = ctx.step
        loop = step.agent
        assert loop is not None
        tool_list = ", ".join(loop.tools)
        prompt = str(render_or_fail(loop.prompt, ctx.context, "prompt"))
        messages = [Message("system", str(render_or_fail(loop.system, ctx.context, "system")))] if loop.system else []
        messages.append(Message("user", f"{prompt}\n\nTools you may call: {tool_list}. Reply with JSON only: "
                                        '{"tool": "<name>", "args": {...}, "why": "..."} to call a tool, or '
                                        '{"final": <answer>, "why": "..."} when done.'))
        params = ModelParams(options=dict(loop.sandbox or {}))
        log = LlmLog()
        replay = {c.iteration: c for c in ctx.services.loop_calls(ctx)}
        for iteration in range(1, loop.max_iterations + 1):
            recorded = replay.get(iteration)
            if recorded is not None:  # checkpointed before a crash: feed the model the same history
                messages += [Message("assistant", recorded.reply),
                             Message("user", f"Tool {recorded.tool} returned: {json.dumps(recorded.output)}")]
                continue
            response, chosen_model, _ = ask_models(ctx.toolbox, params, [loop.model, *loop.fallbacks], messages,
                                                   iteration, log)
            text = response.text
            try:
                action = json.loads(text)
                if not isinstance(action, dict):
                    raise TypeError("not an object")
            except (json.JSONDecodeError, TypeError):
                messages += [Message("assistant", text), Message("user", "Reply with one JSON object only.")]
                continue
            if "final" in action:
                output = action["final"]
                verdicts = validate_output(step, output, ctx.context)
                return StepOutcome(output=output, considered=[*loop.tools, "final"], chosen="final",
                                   why=str(action.get("why") or f"model {chosen_model!r} finished after "
                                       f"{iteration - 1} tool call(s)"), verdicts=log.usage + verdicts,
                                   attempts=iteration, llm_calls=log.calls, cost_usd=log.cost,
                                   input_hash_source=prompt)
            tool_name, args = str(action.get("tool", "")), action.get("args", {})
            if tool_name not in loop.tools:
                raise StepFailed("scope", f"agent loop chose tool {tool_name!r}, not among its tools ({tool_list})",
                                 action="fail", details={"kind": "tool", "target": tool_name, "llm_calls": log.calls,
                                                         "cost_usd": str(log.cost)})
            output = self._tool_call(ctx, iteration, tool_name, args, text, action)
            messages += [Message("assistant", text),
                         Message("user", f"Tool {tool_name} returned: {json.dumps(output, default=str)}")]
        raise StepFailed("budget", f"agent loop did not finish within max_iterations={loop.max_iterations}",
                         action="escalate", details={"llm_calls": log.calls, "cost_usd": str(log.cost)})

    @staticmethod
    def _tool_call(ctx: StepContext, iteration: int, tool_name: str, args: Any, reply: str,
                   action: dict[str, Any]) -> Any:
        """One tool call of the loop: the ledger for side effects, then a checkpoint and an event."""
        tool = ctx.toolbox.tool(tool_name)
        key = None
        if tool.side_effect:
            key = ctx.services.ledger_intent(ctx, bool(tool.idempotent), suffix=f".{iteration}", tool_name=tool_name)
        started = time.perf_counter()
        call = ToolCall(tenant_id=ctx.tenant_id, run_id=ctx.run_id, item_index=ctx.item_index, step_id=ctx.step.id,
                        args=args, idempotency_key=key)
        output, _ = call_tool(tool, call)
        output = ctx.toolbox.mask(output)  # an echoed secret reaches neither the model nor the loop's checkpoint
        agent = ctx.step.agent
        ctx.services.record_loop_call(
            ctx, {"iteration": iteration, "tool": tool_name, "args": redact(args), "reply": reply, "output": output},
            key, output,
            {"kind": "agent.tool_call", "considered": [*agent.tools, "final"] if agent else None, "chosen": tool_name,
             "why": str(action.get("why") or f"iteration {iteration}"),
             "latency_ms": (time.perf_counter() - started) * 1000, "input_hash": sha256_hex(args),
             "output_hash": sha256_hex(output)})
        return output
