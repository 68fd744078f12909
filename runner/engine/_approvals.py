"""The approval gate: a risky action waits for a human before it runs.

Before each step, the agent's approval rules (CEL ``when`` over the run context and the pending
``step``: id, kind, tool, rendered args) are evaluated. A match asks for an approval pinned to the
hash of its *binding*, the exact request that will be sent (:func:`request_binding`: for an HTTP tool
the stored definition's hash, method, URL, headers other than credentials and the body's hash; for
other actions the action and its rendered args), which the approver is shown. The run releases its
worker (``waiting_approval``) until the decision or the expiry (``on_timeout``, default deny). An
approval is used once, and only for the request it was asked for: anything that changes it in between
(the tool replaced, other args) invalidates the approval (``approval.invalidated``) and asks again.
Each action at a step position has its own approvals: an ``agent`` step's model-chosen tool calls are
gated one by one (their action names the call, ``crm.refund (agent call 2.1)``; ``step.tool`` is the called tool).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.engine._kinds import PendingAction, StepContext
from runner.errors import RuleError, StepFailed
from runner.rules import RuleInput, compile_rule, rule_set
from runner.spec import ApprovalRule
from tenants.approvals.repository import ApprovalRepository
from tenants.approvals.service import ApprovalRequest, request_approval
from tenants.kit.db import Session
from tenants.kit.ids import sha256_hex, utcnow
from tenants.kit.logging import redact
from tenants.runs.journal import JournalWrite, Release

if TYPE_CHECKING:
    from runner.engine._run import RunSlice

__all__ = ["approval_gate", "request_binding"]


def _matching_rule(rules: list[ApprovalRule], ctx: StepContext, pending: PendingAction) -> ApprovalRule | None:
    step = ctx.step
    data = RuleInput({**ctx.context, "step": {"id": step.id, "kind": step.kind, "tool": step.tool or "",
                                               "args": pending.args}})
    first = rule_set(tuple(rule.when for rule in rules)).first_true(data)  # one cel call for all of them
    if first is not None:
        return rules[first] if first >= 0 else None
    for rule in rules:  # one by one: a rule that fails is reported
        try:
            if compile_rule(rule.when).evaluate(data):
                return rule
        except RuleError as exc:
            raise StepFailed("validation", f"approval rule {rule.when!r} could not be evaluated: {exc}",
                             action="escalate") from exc
    return None


def approval_gate(run: RunSlice, ctx: StepContext, pending: PendingAction) -> bool:
    """Return True to proceed, False when the run now waits for a human (its lease is released);
    raise StepFailed when the action was denied (rejected, or expired with ``on_timeout: deny``)."""
    rules = run.spec.autonomy.approvals
    if not rules:
        return True
    rule = _matching_rule(rules, ctx, pending)
    if rule is None:
        return True
    binding = request_binding(ctx, pending)
    args_hash = sha256_hex(binding)
    verdict: list[str] = []
    journal = run.journal
    now = utcnow()

    def decide(session: Session) -> JournalWrite:
        outcome, release = _verdict(run, session, ctx, pending, binding, args_hash, rule)
        verdict[:] = [outcome]
        return journal.write(now, release=release)

    flags = journal.commit(decide, what="approval gate")
    if verdict[0] == "proceed":
        run._stop_if_asked(flags)  # cancelled or suspended meanwhile: stop before acting, not after
        return True
    if verdict[0] == "wait":
        return False
    raise StepFailed("approval", verdict[0], action="fail")


def request_binding(ctx: StepContext, pending: PendingAction) -> dict[str, Any]:
    """What an approval of ``pending`` binds: for one of the agent's HTTP tools the exact request
    (:meth:`runner.tools.http.HttpTool.binding`, from the definition this slice will call); for anything
    else (a built-in tool, a model call) the action and its rendered args."""
    if pending.action in ctx.toolbox.spec.scope.tools:
        binding = getattr(ctx.toolbox.tool(pending.action), "binding", None)
        if binding is not None:
            return dict(binding(pending.args))
    return {"action": pending.action, "args": pending.args}


def _changes(before: Any, after: dict[str, Any]) -> str:
    """Which parts of the bound request differ, in words (for the invalidation's why)."""
    if not isinstance(before, dict):
        return "the request differs from the one approved"
    names = {"definition_sha256": "tool definition", "body_sha256": "body"}
    changed = [names.get(k, k) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return "changed: " + ", ".join(changed) if changed else "the request differs from the one approved"


def _summary(binding: dict[str, Any]) -> str:
    if "method" in binding:
        return (f"{binding['method']} {binding['url']} (tool definition sha256 "
                f"{str(binding['definition_sha256'])[:12]}…)")
    return str(binding.get("action"))


def _verdict(run: RunSlice, session: Session, ctx: StepContext, pending: PendingAction, binding: dict[str, Any],
             args_hash: str, rule: ApprovalRule) -> tuple[str, Release | None]:
    """'proceed', 'wait' (approval requested; the release to apply) or a denial reason, from the approvals."""
    now = utcnow()
    journal = run.journal
    approvals = ApprovalRepository(session, ctx.tenant_id)
    latest = approvals.latest_for(ctx.run_id, ctx.item_index, ctx.index, action=pending.action)
    where: dict[str, Any] = {"item_index": ctx.item_index, "step_index": ctx.index, "step_id": ctx.step.id}
    action = pending.action
    if latest is not None and latest.state in ("approved", "consumed") and latest.args_hash == args_hash:
        if latest.state == "approved":
            approvals.transition(latest.id, from_state="approved", state="consumed")
            journal.event(now, "approval.granted", **where, chosen=action, considered=["call", "wait", "deny"],
                          why=f"approved by {latest.decided_by}" + (f": {latest.comment}" if latest.comment else "")
                          + f" (rule {rule.when!r})")
        return "proceed", None
    if latest is not None and latest.state == "rejected":
        return f"approval {latest.id} rejected by {latest.decided_by}" + (
            f": {latest.comment}" if latest.comment else ""), None
    if latest is not None and latest.state == "expired":
        if latest.on_timeout == "approve":
            approvals.transition(latest.id, from_state="expired", state="consumed")
            journal.event(now, "approval.granted", **where, chosen=action, considered=["call", "deny"],
                          why=f"approval {latest.id} expired with on_timeout: approve")
            return "proceed", None
        return f"approval {latest.id} expired without a decision (on_timeout: deny)", None
    if not (latest is not None and latest.state == "pending" and latest.args_hash == args_hash):
        if latest is not None:  # asked for another request: that approval is not valid for this one
            approvals.transition(latest.id, from_state=latest.state, state="superseded")
            journal.event(now, "approval.invalidated", **where, chosen="request a new approval",
                          considered=["call", "request a new approval"],
                          why=f"approval {latest.id} ({latest.state}) was for another request "
                              f"({_changes(latest.binding, redact(binding))})")
        seq = approvals.next_seq(ctx.run_id, ctx.item_index, ctx.index)
        approval = request_approval(session, ctx.tenant_id, ApprovalRequest(
            run_id=ctx.run_id, agent_name=run.agent_name, item_index=ctx.item_index, step_index=ctx.index,
            step_id=ctx.step.id, action=action, args=redact(pending.args), args_hash=args_hash, rule=rule.when,
            route=rule.route, timeout_s=rule.timeout_s, on_timeout=rule.on_timeout, seq=seq,
            binding=redact(binding)), now)
        journal.event(now, "approval.requested", **where, chosen="wait for a human",
                      considered=["call", "wait for a human"],
                      why=f"rule {rule.when!r} matched for {_summary(binding)}; routed to {rule.route}, expires in "
                          f"{rule.timeout_s}s (on_timeout: {rule.on_timeout}); approval {approval.id}")
    return "wait", run.release(now, state="waiting_approval",
                               reason=f"waiting for approval of {action} (item {ctx.item_index}, step {ctx.step.id})")
