"""Wire types of the approval and escalation queues."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from platform_api.schemas.common import In, PublicText

__all__ = ["ApprovalOut", "Decision", "EscalationOut"]



class ApprovalOut(BaseModel):
    """An approval: the exact action waiting for a human, and what became of it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    agent_name: str
    item_index: int
    step_id: str
    action: str = Field(description="the tool (or model) the step is about to call")
    args: Any = Field(description="the rendered arguments, exactly as they will be sent")
    binding: Any = Field(None, description=(
        "What approving this allows, exactly: for an HTTP tool the request that will be sent (tool, "
        "definition_sha256 of the stored definition, method, url, headers other than credentials, auth by "
        "secret name, idempotency_header, body_sha256); for other actions the action and its args. Any "
        "change before the call (the tool replaced, other args) invalidates the approval and asks again."))
    args_hash: str = Field(description="SHA-256 of the binding: the approval is valid only for this request")
    rule: str
    route: str
    on_timeout: str
    state: str
    decided_by: str | None
    comment: str | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None


class Decision(In):
    comment: str | None = Field(None, max_length=2000)


class EscalationOut(BaseModel):
    run_id: str
    agent_name: str
    run_state: str
    item_index: int
    reason: PublicText
    failure_category: str | None
    updated_at: datetime | None
