"""All SQL for approvals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update

from tenants.approvals.models import Approval
from tenants.kit.repository import PlatformRepository, TenantRepository

__all__ = ["ApprovalRepository", "PlatformApprovalRepository"]


class ApprovalRepository(TenantRepository):
    """A tenant's approvals."""

    def add(self, approval: Approval) -> Approval:
        approval.tenant_id = self.tenant_id
        self.session.add(approval)
        self.session.flush()
        return approval

    def get(self, approval_id: str, *, for_update: bool = False) -> Approval | None:
        q = select(Approval).where(Approval.tenant_id == self.tenant_id, Approval.id == approval_id)
        if for_update:
            q = q.with_for_update()
        return self.session.scalar(q)

    def latest_for(self, run_id: str, item_index: int, step_index: int, *, action: str | None = None
                   ) -> Approval | None:
        """The newest approval at this position (of ``action`` only, when given: an agent step's model-chosen
        tool calls each have their own)."""
        q = (select(Approval)
             .where(Approval.tenant_id == self.tenant_id, Approval.run_id == run_id, Approval.item_index == item_index,
                    Approval.step_index == step_index))
        if action is not None:
            q = q.where(Approval.action == action)
        return self.session.scalar(q.order_by(Approval.seq.desc()).limit(1))

    def next_seq(self, run_id: str, item_index: int, step_index: int) -> int:
        """The ``seq`` of the next approval at this position."""
        top = self.session.scalar(
            select(func.max(Approval.seq))
            .where(Approval.tenant_id == self.tenant_id, Approval.run_id == run_id, Approval.item_index == item_index,
                   Approval.step_index == step_index))
        return int(top or 0) + 1

    def list(self, *, state: str | None, run_id: str | None, after: str | None, limit: int) -> Sequence[Approval]:
        q = select(Approval).where(Approval.tenant_id == self.tenant_id).order_by(Approval.id).limit(limit)
        if state:
            q = q.where(Approval.state == state)
        if run_id:
            q = q.where(Approval.run_id == run_id)
        if after:
            q = q.where(Approval.id > after)
        return self.session.scalars(q).all()

    def transition(self, approval_id: str, *, from_state: str, **values: Any) -> bool:
        """Change state only from ``from_state`` (single use: a second decision changes nothing)."""
        res = self.session.execute(
            update(Approval)
            .where(Approval.tenant_id == self.tenant_id, Approval.id == approval_id, Approval.state == from_state)
            .values(**values)
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]


class PlatformApprovalRepository(PlatformRepository):
    """Cross-tenant views: the scheduler's pending approvals past their expiry, the operator dashboard's queue."""

    def expired(self, now: datetime, limit: int = 500) -> Sequence[Approval]:
        return self.session.scalars(
            select(Approval).where(Approval.state == "pending", Approval.expires_at <= now)
            .order_by(Approval.expires_at).limit(limit).with_for_update(skip_locked=True)
        ).all()

    def pending_count(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(Approval)
                                       .where(Approval.state == "pending")) or 0)

    def pending_by_tenant(self, now: datetime) -> list[tuple[str, int, datetime, int]]:
        """(tenant_id, pending, oldest created_at, past their expiry) per tenant (``ix_approvals_state_expiry``)."""
        overdue = func.sum(case((Approval.expires_at < now, 1), else_=0))
        rows = self.session.execute(
            select(Approval.tenant_id, func.count(), func.min(Approval.created_at), overdue)
            .where(Approval.state == "pending").group_by(Approval.tenant_id)
        ).all()
        return [(str(t), int(n), oldest, int(late or 0)) for t, n, oldest, late in rows]

    def pending(self, limit: int) -> Sequence[Approval]:
        """Pending approvals, soonest expiry first (``ix_approvals_state_expiry``)."""
        return self.session.scalars(
            select(Approval).where(Approval.state == "pending").order_by(Approval.expires_at, Approval.id).limit(limit)
        ).all()

    def decided_since(self, since: datetime, limit: int) -> Sequence[Approval]:
        """Approvals decided (approved, rejected, expired, consumed, superseded) since ``since``, newest first."""
        return self.session.scalars(
            select(Approval).where(Approval.state != "pending", Approval.decided_at >= since)
            .order_by(Approval.decided_at.desc(), Approval.id).limit(limit)
        ).all()
