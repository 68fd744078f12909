"""Column types shared by the domain models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ["FAILURE_CATEGORIES", "Edited", "JsonType", "TenantOwned", "UtcDateTime"]

# Why a step (and so an item or a run) failed: the closed set every layer reports with (events, metrics, rollups).
FAILURE_CATEGORIES = ("dependency", "auth", "validation", "budget", "scope", "approval", "state", "internal")

JsonType = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both PostgreSQL and SQLite (which drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class TenantOwned:
    """Mixin of a table whose rows belong to one tenant: an ``id`` key and the indexed ``tenant_id``."""

    id: Mapped[str] = mapped_column(String(40), primary_key=True, sort_order=-2)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True, sort_order=-1)


class Edited:
    """Mixin of a table whose rows are created and then edited in place."""

    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), sort_order=1)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), sort_order=1)
