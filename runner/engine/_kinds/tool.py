"""The ``tool`` kind: render the arguments, call the tool (through the ledger when it is a side effect)
with its retry policy, and validate what it returns."""

from __future__ import annotations

from typing import Any

from runner.engine._kinds import PendingAction, StepContext, StepOutcome
from runner.engine._validate import validate_output
from runner.errors import StepFailed, TemplateError
from runner.providers.tool_args import validate_args
from runner.templating import render
from runner.tools.base import Tool, ToolCall
from tenants.kit.tracing import tool_span

__all__ = ["ToolKind", "call_tool", "render_or_fail"]


def render_or_fail(value: Any, context: dict[str, Any], what: str) -> Any:
    """Render a template; a template that cannot render fails the item as ``validation``."""
    try:
        return render(value, context)
    except TemplateError as exc:
        raise StepFailed("validation", f"{what}: {exc}", action="escalate") from exc


def call_tool(tool: Tool, call: ToolCall, start_attempt: int = 1) -> tuple[Any, list[dict[str, Any]]]:
    """Call a tool; its output and one verdict per attempt (HTTP tools retry by failure category)."""
    result = tool.call_detailed(call, start_attempt=start_attempt)
    return result.value, [{"check": "attempt", **a.to_dict()} for a in result.attempts]


class ToolKind:
    """``tool: NAME`` with ``args``."""

    def pending_action(self, ctx: StepContext) -> PendingAction:
        assert ctx.step.tool is not None
        return PendingAction(ctx.step.tool, render_or_fail(ctx.step.args, ctx.context, "args"))

    def run(self, ctx: StepContext, pending: PendingAction) -> StepOutcome:
        step = ctx.step
        assert step.tool is not None
        tool = ctx.toolbox.tool(step.tool)
        validate_args(tool, pending.args)  # before any call, and before a side effect's intent
        key = (ctx.services.ledger_intent(ctx, bool(tool.idempotent)) if ctx.services.side_effect(step) else None)
        call = ToolCall(tenant_id=ctx.tenant_id, run_id=ctx.run_id, item_index=ctx.item_index, step_id=step.id,
                        args=pending.args, idempotency_key=key)
        try:
            with tool_span(tool=step.tool, side_effect=key is not None, idempotency_key=key,
                           attempt=ctx.start_attempt):
                output, attempts = call_tool(tool, call, ctx.start_attempt)
        except StepFailed as failure:
            if key is not None:
                failure.details.setdefault("idempotency_key", key)
            raise
        verdicts = validate_output(step, output, ctx.context)
        why = f"spec step {step.id!r} calls tool {step.tool}"
        if len(attempts) > 1:
            why += f"; succeeded on attempt {len(attempts) + ctx.start_attempt - 1} after retries"
        return StepOutcome(output=output, considered=[step.tool], chosen=step.tool, why=why,
                           verdicts=attempts + verdicts, attempts=max(1, len(attempts)),
                           input_hash_source=pending.args, idempotency_key=key)
