"""Tables: tool_definitions, model_configs, circuit_breakers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import Edited, JsonType, TenantOwned, UtcDateTime

__all__ = ["BreakerRecord", "ModelRecord", "ToolRecord"]


class ToolRecord(TenantOwned, Edited, Base):
    """A tenant's HTTP tool (connector) definition; ``version`` bumps on every change."""

    __tablename__ = "tool_definitions"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_tool_definitions_tenant_name"),)

    name: Mapped[str] = mapped_column(String(120))
    definition: Mapped[dict[str, Any]] = mapped_column(JsonType)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ModelRecord(TenantOwned, Edited, Base):
    """A tenant's model alias → provider configuration (with per-token prices)."""

    __tablename__ = "model_configs"
    __table_args__ = (UniqueConstraint("tenant_id", "alias", name="uq_model_configs_tenant_alias"),)

    alias: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)
    version: Mapped[int] = mapped_column(Integer, default=1)


class BreakerRecord(Base):
    """The shared state of one circuit breaker (per tenant and host), across all workers."""

    __tablename__ = "circuit_breakers"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JsonType)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
