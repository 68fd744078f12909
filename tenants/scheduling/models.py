"""Tables: tenant_schedules (weight, virtual time, running count and cap per tenant) and agent_schedules
(running count and cap per agent).

A worker claims runs in order of the tenants' virtual time (stride scheduling): each claim advances the
tenant's ``vtime`` by its expected slice cost over its ``weight`` and each release corrects it by the time
the slice really took, so over time every tenant with work gets worker time in proportion to its weight.
``running`` counts runs holding a lease; ``cap`` (a ``concurrent_runs`` budget limit) bounds it exactly,
because the count only moves under the row's lock, in the claim and release statements.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import UtcDateTime

__all__ = ["DEFAULT_SLICE_S", "MAX_WEIGHT", "AgentSchedule", "TenantSchedule"]

DEFAULT_SLICE_S = 0.05  # a new tenant's expected slice cost, before its first release teaches us better
MAX_WEIGHT = 100


class TenantSchedule(Base):
    __tablename__ = "tenant_schedules"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    weight: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    vtime: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    avg_slice_s: Mapped[float] = mapped_column(Float, default=DEFAULT_SLICE_S, server_default=text("0.05"))
    running: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cap: Mapped[int | None] = mapped_column(Integer, nullable=True)  # concurrent_runs limit; None: no cap
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class AgentSchedule(Base):
    __tablename__ = "agent_schedules"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    agent_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    running: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cap: Mapped[int | None] = mapped_column(Integer, nullable=True)  # per-agent concurrent_runs limit
