"""Wire types of agents and their versions (/v1/agents)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from platform_api.schemas.common import Out

__all__ = ["AgentOut", "AgentVersionOut", "LintOut", "StoredAgentOut"]



class LintOut(BaseModel):
    valid: bool
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    projection: dict[str, Any] | None


class AgentVersionOut(Out):
    id: str
    version: int
    spec_hash: str
    spec: dict[str, Any]
    warnings: list[Any]
    created_at: datetime


class AgentOut(Out):
    id: str
    name: str
    latest_version: int
    created_at: datetime
    updated_at: datetime


class StoredAgentOut(BaseModel):
    agent: AgentOut
    version: AgentVersionOut
    created: bool
