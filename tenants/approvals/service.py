"""Rules for approvals. Never commits.

A risky step creates a pending approval holding the exact request it covers (its binding) and that
binding's hash; the run waits (``waiting_approval``) without holding a worker. A decision by a
principal with the routed role (or a tenant admin) wakes the run within seconds; the scheduler
expires approvals past their deadline and applies ``on_timeout`` (default deny). An approval is used
once, and only for the request it was asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tenants.approvals.models import Approval
from tenants.approvals.repository import ApprovalRepository, PlatformApprovalRepository
from tenants.kit import metrics
from tenants.kit.db import call_after_commit, enqueue_after_commit
from tenants.kit.errors import Conflict, Forbidden, NotFound, found
from tenants.kit.ids import new_id, utcnow
from tenants.runs.repository import RunRepository, back_in_queue
from tenants.runs.service import EXECUTE_RUN, wake_grace
from tenants.webhooks.service import emit

__all__ = ["ApprovalRequest", "decide", "expire_due", "get_approval", "list_approvals", "request_approval"]


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    run_id: str
    agent_name: str
    item_index: int
    step_index: int
    step_id: str
    action: str
    args: Any
    args_hash: str
    rule: str
    route: str
    timeout_s: int
    on_timeout: str
    seq: int = 1
    binding: Any = None  # the exact request the approval covers (``args_hash`` is its SHA-256)


def request_approval(session: Session, tenant_id: str, req: ApprovalRequest, now: datetime) -> Approval:
    """Create a pending approval (in the engine's transaction) and queue the approval.requested webhook."""
    approval = ApprovalRepository(session, tenant_id).add(Approval(
        id=new_id("apr"), tenant_id=tenant_id, run_id=req.run_id, agent_name=req.agent_name,
        item_index=req.item_index, step_index=req.step_index, step_id=req.step_id, seq=req.seq, action=req.action,
        args=req.args, args_hash=req.args_hash, binding=req.binding, rule=req.rule, route=req.route,
        on_timeout=req.on_timeout,
        state="pending", created_at=now, expires_at=now + timedelta(seconds=req.timeout_s)))
    emit(session, tenant_id, "approval.requested", {
        "approval_id": approval.id, "run_id": req.run_id, "agent": req.agent_name, "step_id": req.step_id,
        "action": req.action, "binding": req.binding, "route": req.route,
        "expires_at": approval.expires_at.isoformat()})
    return approval


def get_approval(session: Session, tenant_id: str, approval_id: str) -> Approval:
    return found(ApprovalRepository(session, tenant_id).get(approval_id), f"approval {approval_id!r}")


def list_approvals(session: Session, tenant_id: str, *, state: str | None, run_id: str | None, after: str | None,
                   limit: int) -> Sequence[Approval]:
    return ApprovalRepository(session, tenant_id).list(state=state, run_id=run_id, after=after, limit=limit)


def _wake(session: Session, tenant_id: str, run_id: str, now: datetime) -> None:
    """Put a waiting run back in the queue (parked as ``suspended`` while its tenant is) and wake a worker
    after commit."""
    if RunRepository(session, tenant_id).set_state(run_id, from_states=["waiting_approval"], updated_at=now,
                                                   **back_in_queue(now, now + wake_grace())):
        enqueue_after_commit(session, EXECUTE_RUN, tenant_id=tenant_id, run_id=run_id)


def decide(session: Session, tenant_id: str, approval_id: str, *, approve: bool, role: str, key_id: str,
           comment: str | None) -> Approval:
    """Approve or reject, once, as a principal holding the routed role (or a tenant admin)."""
    repo = ApprovalRepository(session, tenant_id)
    approval = repo.get(approval_id, for_update=True)
    if approval is None:
        raise NotFound(f"approval {approval_id!r} not found")
    if role not in (approval.route, "tenant-admin"):
        raise Forbidden(f"this approval is routed to the {approval.route!r} role (your key is {role})")
    if approval.state != "pending":
        raise Conflict(f"approval is already {approval.state}; approvals are single-use", state=approval.state)
    now = utcnow()
    if approval.expires_at <= now:
        raise Conflict("approval has expired; the scheduler applies its on_timeout", state="expired")
    repo.transition(approval_id, from_state="pending", state="approved" if approve else "rejected",
                    decided_by=key_id, comment=comment, decided_at=now)
    _wake(session, tenant_id, approval.run_id, now)
    session.refresh(approval)
    return approval


def expire_due(session: Session, now: datetime) -> list[Approval]:
    """Expire pending approvals past their deadline and wake their runs (scheduler; any tenant)."""
    expired = list(PlatformApprovalRepository(session).expired(now))
    for approval in expired:
        ApprovalRepository(session, approval.tenant_id).transition(approval.id, from_state="pending",
                                                                   state="expired", decided_at=now)
        emit(session, approval.tenant_id, "approval.expired", {
            "approval_id": approval.id, "run_id": approval.run_id,
            "outcome": "approved" if approval.on_timeout == "approve" else "denied"})
        _wake(session, approval.tenant_id, approval.run_id, now)
    for tenant_id in {a.tenant_id for a in expired}:  # counted once the expiry is committed
        count = sum(1 for a in expired if a.tenant_id == tenant_id)
        call_after_commit(session, functools.partial(metrics.approvals_expired, tenant_id, count))
    return expired
