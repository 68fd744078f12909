"""Tables: rehearsals (one report per rehearsal of an agent version), rehearsal_policies (the deploy gate)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import JsonType, UtcDateTime

__all__ = ["PROFILE_RANKS", "REHEARSAL_STATES", "Rehearsal", "RehearsalPolicy"]

REHEARSAL_STATES = ("queued", "running", "finished", "error")
# How demanding a profile is, for a policy's ``min_profile``: a custom profile file counts as the least.
PROFILE_RANKS = {"custom": 0, "gentle": 1, "realistic": 2, "hostile": 3}


class Rehearsal(Base):
    """One rehearsal: what was rehearsed (agent version, profile, seed, sizes), its state and its report.

    ``source`` is ``agent`` for a stored version rehearsed with the tenant's own tool catalog (the only kind
    the deploy gate counts) or ``file`` for a spec file or bundle. The summary columns repeat the report's
    headline figures so lists and the dashboard never parse the report.
    """

    __tablename__ = "rehearsals"
    __table_args__ = (
        Index("ix_rehearsals_tenant_agent", "tenant_id", "agent_name", "id"),
        Index("ix_rehearsals_gate", "tenant_id", "agent_version_id", "verdict"),
        Index("ix_rehearsals_state", "state", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    agent_name: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agent_version_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    source: Mapped[str] = mapped_column(String(8))  # agent | file
    spec_hash: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(64))
    profile_rank: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    items: Mapped[int] = mapped_column(Integer)
    repeat: Mapped[int] = mapped_column(Integer)
    options: Mapped[Any] = mapped_column(JsonType, nullable=True)  # a custom profile, as requested
    state: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str | None] = mapped_column(String(8), nullable=True)  # pass | fail
    measured: Mapped[float | None] = mapped_column(Float, nullable=True)
    projected: Mapped[float | None] = mapped_column(Float, nullable=True)
    slo: Mapped[float | None] = mapped_column(Float, nullable=True)
    pass_k: Mapped[float | None] = mapped_column(Float, nullable=True)
    duplicates: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recovery_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    report: Mapped[Any] = mapped_column(JsonType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RehearsalPolicy(Base):
    """A tenant's deploy gate for one agent: with ``requires_rehearsal`` submissions run only versions whose
    rehearsal (with a profile at least ``min_profile``) passed."""

    __tablename__ = "rehearsal_policies"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    agent_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    requires_rehearsal: Mapped[bool] = mapped_column(Boolean, default=False)
    min_profile: Mapped[str] = mapped_column(String(16), default="realistic")
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
