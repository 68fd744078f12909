"""All SQL for tool definitions, model configurations and breaker states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from tenants.catalog.models import BreakerRecord, ModelRecord, ToolRecord
from tenants.kit.db import insert_ignore
from tenants.kit.ids import new_id
from tenants.kit.repository import PlatformRepository, TenantRepository

__all__ = ["CatalogRepository", "PlatformCatalogRepository"]


class CatalogRepository(TenantRepository):
    """A tenant's tools, models and breakers."""

    # ---- tools ------------------------------------------------------------------------------
    def tool(self, name: str) -> ToolRecord | None:
        return self.session.scalar(select(ToolRecord).where(ToolRecord.tenant_id == self.tenant_id,
                                                            ToolRecord.name == name))

    def tools(self) -> Sequence[ToolRecord]:
        return self.session.scalars(select(ToolRecord).where(ToolRecord.tenant_id == self.tenant_id)
                                    .order_by(ToolRecord.name)).all()

    def put_tool(self, name: str, definition: dict[str, Any], now: datetime) -> tuple[ToolRecord, bool]:
        existing = self.tool(name)
        if existing is None:
            record = ToolRecord(id=new_id("tool"), tenant_id=self.tenant_id, name=name, definition=definition,
                                version=1, created_at=now, updated_at=now)
            self.session.add(record)
            self.session.flush()
            return record, True
        if existing.definition != definition:
            existing.definition = definition
            existing.version += 1
            existing.updated_at = now
            self.session.flush()
        return existing, False

    def delete_tool(self, name: str) -> bool:
        res = self.session.execute(delete(ToolRecord).where(ToolRecord.tenant_id == self.tenant_id,
                                                            ToolRecord.name == name))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    # ---- models -----------------------------------------------------------------------------
    def model(self, alias: str) -> ModelRecord | None:
        return self.session.scalar(select(ModelRecord).where(ModelRecord.tenant_id == self.tenant_id,
                                                             ModelRecord.alias == alias))

    def models(self) -> Sequence[ModelRecord]:
        return self.session.scalars(select(ModelRecord).where(ModelRecord.tenant_id == self.tenant_id)
                                    .order_by(ModelRecord.alias)).all()

    def put_model(self, alias: str, config: dict[str, Any], now: datetime) -> tuple[ModelRecord, bool]:
        existing = self.model(alias)
        if existing is None:
            record = ModelRecord(id=new_id("mdl"), tenant_id=self.tenant_id, alias=alias, config=config, version=1,
                                 created_at=now, updated_at=now)
            self.session.add(record)
            self.session.flush()
            return record, True
        if existing.config != config:
            existing.config = config
            existing.version += 1
            existing.updated_at = now
            self.session.flush()
        return existing, False

    def delete_model(self, alias: str) -> bool:
        res = self.session.execute(delete(ModelRecord).where(ModelRecord.tenant_id == self.tenant_id,
                                                             ModelRecord.alias == alias))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    # ---- breakers ---------------------------------------------------------------------------
    def breaker(self, host: str) -> dict[str, Any] | None:
        """The breaker state without locking (most calls change nothing)."""
        row = self.session.scalar(select(BreakerRecord.state).where(BreakerRecord.tenant_id == self.tenant_id,
                                                                    BreakerRecord.host == host))
        return dict(row) if row is not None else None

    def breaker_for_update(self, host: str) -> dict[str, Any] | None:
        """The breaker row, locked until commit (PostgreSQL; SQLite serialises writers anyway)."""
        row = self.session.scalar(
            select(BreakerRecord.state).where(BreakerRecord.tenant_id == self.tenant_id, BreakerRecord.host == host)
            .with_for_update()
        )
        return dict(row) if row is not None else None

    def ensure_breaker(self, host: str, state: dict[str, Any], now: datetime) -> None:
        """Create the row if missing (so a later ``FOR UPDATE`` has something to lock)."""
        self.session.execute(insert_ignore(self.session, BreakerRecord, "tenant_id", "host")
                             .values(tenant_id=self.tenant_id, host=host, state=state, updated_at=now))

    def save_breaker(self, host: str, state: dict[str, Any], now: datetime) -> None:
        record = self.session.get(BreakerRecord, (self.tenant_id, host))
        if record is None:
            self.session.add(BreakerRecord(tenant_id=self.tenant_id, host=host, state=state, updated_at=now))
        else:
            record.state = state
            record.updated_at = now
        self.session.flush()

    def breakers(self) -> Sequence[BreakerRecord]:
        return self.session.scalars(select(BreakerRecord).where(BreakerRecord.tenant_id == self.tenant_id)
                                    .order_by(BreakerRecord.host)).all()


class PlatformCatalogRepository(PlatformRepository):
    """Across tenants: every circuit breaker's stored state (the operator's metrics and status)."""

    def breakers(self) -> Sequence[BreakerRecord]:
        """Every breaker row (one per tenant and dependency host a tool has called)."""
        return self.session.scalars(select(BreakerRecord).order_by(BreakerRecord.tenant_id, BreakerRecord.host)).all()
