"""Tables: agents, agent_versions (immutable once stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import Edited, JsonType, TenantOwned, UtcDateTime

__all__ = ["Agent", "AgentVersion", "VersionRef"]


class Agent(TenantOwned, Edited, Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_agents_tenant_name"),)

    name: Mapped[str] = mapped_column(String(64))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)


class AgentVersion(TenantOwned, Base):
    __tablename__ = "agent_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version", name="uq_agent_versions_agent_version"),)

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    spec_hash: Mapped[str] = mapped_column(String(64))
    warnings: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


@dataclass(frozen=True, slots=True)
class VersionRef:
    """What a submission needs of a version, read as plain columns (no ORM object on the hot path; the
    parsed spec is cached by version id)."""

    id: str
    agent_id: str
    version: int
