"""Table: approvals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import JsonType, UtcDateTime

__all__ = ["Approval"]

APPROVAL_STATES = ("pending", "approved", "rejected", "expired", "consumed", "superseded")


class Approval(Base):
    """A pending (or decided) decision on one risky action of one run item.

    ``args_hash`` pins ``binding``, the exact request: an approval is valid only for the request it
    was asked for (any change — another tool definition, method, URL, header or body — asks again), and
    only once (``consumed`` after use).
    """

    __tablename__ = "approvals"
    __table_args__ = (
        Index("ix_approvals_tenant_state", "tenant_id", "state", "id"),
        Index("ix_approvals_state_expiry", "state", "expires_at"),
        UniqueConstraint("run_id", "item_index", "step_index", "seq", name="uq_approvals_position"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    agent_name: Mapped[str] = mapped_column(String(64))
    item_index: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer, default=1)  # a new request after changed arguments gets seq+1
    action: Mapped[str] = mapped_column(String(120))  # the tool (or model) the step would call
    args: Mapped[Any] = mapped_column(JsonType, nullable=True)  # redacted copy, for the human
    args_hash: Mapped[str] = mapped_column(String(64))  # the SHA-256 of ``binding``
    # What the approval covers, as the approver sees it: for an HTTP tool the exact request (the stored
    # definition's hash, method, URL, headers other than credentials, body hash); else action and args.
    binding: Mapped[Any] = mapped_column(JsonType, nullable=True)
    rule: Mapped[str] = mapped_column(Text)  # the CEL `when` that matched
    route: Mapped[str] = mapped_column(String(16))  # the role that may decide
    on_timeout: Mapped[str] = mapped_column(String(8))  # deny | approve
    state: Mapped[str] = mapped_column(String(12), default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
