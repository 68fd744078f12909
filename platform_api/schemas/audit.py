"""Wire types of the audit trails (/v1/audit, /v1/admin/audit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["AuditEventOut"]



class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str | None
    seq: int
    at: datetime
    actor: str
    actor_role: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str
