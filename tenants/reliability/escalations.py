"""The Approvals & escalations page's query: what waits for a human."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tenants.approvals.repository import PlatformApprovalRepository
from tenants.kit.ids import utcnow
from tenants.reliability.common import RunRow, run_row, tenant_names
from tenants.reliability.repository import PlatformReliabilityRepository

__all__ = ["ApprovalRow", "EscalatedItem", "Escalations", "escalations"]

DECIDED_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """One approval (``tenants.approvals``): the action waiting for, or decided by, the routed role."""

    id: str
    tenant_id: str
    tenant: str
    agent_name: str
    run_id: str
    step_id: str
    action: str
    route: str
    rule: str
    on_timeout: str
    state: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class EscalatedItem:
    """One item of an escalated run waiting for a human (skip / fail / resume through the API)."""

    run_id: str
    item_index: int
    tenant_id: str
    tenant: str
    agent_name: str
    category: str | None
    reason: str | None
    since: datetime


@dataclass(frozen=True, slots=True)
class Escalations:
    """What waits for a human: escalated runs and items, runs waiting for approval, the approval queue."""

    now: datetime
    escalated: tuple[RunRow, ...]
    waiting_approval: tuple[RunRow, ...]
    items: tuple[EscalatedItem, ...]
    pending: tuple[ApprovalRow, ...]
    pending_total: int
    decided: tuple[ApprovalRow, ...]


def _approval_row(a: Any, names: dict[str, str]) -> ApprovalRow:
    return ApprovalRow(a.id, a.tenant_id, names.get(a.tenant_id, a.tenant_id), a.agent_name, a.run_id, a.step_id,
                       a.action, a.route, a.rule, a.on_timeout, a.state, a.created_at, a.expires_at, a.decided_at,
                       a.decided_by, a.comment)


def escalations(session: Session, *, limit: int = 200, now: datetime | None = None) -> Escalations:
    """What waits for a human: escalated runs and their escalated items, runs waiting for approval, the
    pending approval queue (soonest expiry first) and the approvals decided or expired in the last 24 h."""
    now = now or utcnow()
    repo = PlatformReliabilityRepository(session)
    approvals = PlatformApprovalRepository(session)
    names = tenant_names(repo)
    escalated = tuple(run_row(r, names) for r in repo.runs_in_states(["escalated"], limit))
    runs = {r.id: r for r in escalated}
    items = tuple(EscalatedItem(i.run_id, i.item_index, i.tenant_id, names.get(i.tenant_id, i.tenant_id),
                                runs[i.run_id].agent_name, i.failure_category, i.reason,
                                i.updated_at or runs[i.run_id].updated_at)
                  for i in repo.escalated_items(list(runs), limit * 4))
    return Escalations(
        now=now,
        escalated=escalated,
        waiting_approval=tuple(run_row(r, names) for r in repo.runs_in_states(["waiting_approval"], limit)),
        items=tuple(sorted(items, key=lambda i: (i.since, i.run_id, i.item_index))),
        pending=tuple(_approval_row(a, names) for a in approvals.pending(limit)),
        pending_total=approvals.pending_count(),
        decided=tuple(_approval_row(a, names) for a in approvals.decided_since(now - DECIDED_WINDOW, limit)),
    )
