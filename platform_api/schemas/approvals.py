"""Wire types of the approval and escalation queues."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from platform_api.schemas.common import PublicText

__all__ = ["ApprovalOut", "Decision", "EscalationOut"]



class ApprovalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    agent_name: str
    item_index: int
    step_id: str
    action: str
    args: Any
    args_hash: str
    rule: str
    route: str
    on_timeout: str
    state: str
    decided_by: str | None
    comment: str | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    comment: str | None = Field(None, max_length=2000)


class EscalationOut(BaseModel):
    run_id: str
    agent_name: str
    run_state: str
    item_index: int
    reason: PublicText
    failure_category: str | None
    updated_at: datetime | None
