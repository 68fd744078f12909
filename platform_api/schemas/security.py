"""Wire types of scope violations (/v1/security)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

__all__ = ["ViolationOut"]



class ViolationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: str
    agent_name: str
    step_id: str
    kind: str
    target: str
    reason: str
    at: datetime
