"""Wire types of tools, models and circuit breakers (/v1/tools, /v1/models, /v1/breakers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from platform_api.schemas.common import Out, PublicText

__all__ = ["BreakerOut", "ModelOut", "ToolOut"]


class ToolOut(Out):
    name: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ModelOut(Out):
    alias: str
    version: int
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class BreakerOut(BaseModel):
    host: str
    state: str
    failures: int
    opened_at: float | None
    last_reason: PublicText
    retry_at: float | None
    updated_at: datetime
