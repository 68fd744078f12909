"""Imports every domain's tables so ``Base.metadata`` is complete (Alembic and tests use this)."""

from tenants.accounts.models import ApiKey, Tenant
from tenants.agents.models import Agent, AgentVersion
from tenants.kit.db import Base
from tenants.reliability.models import (
    AgentHealth,
    FailureHourly,
    LatestFailure,
    ReliabilityCounter,
    RunRollupHourly,
    StepStatDaily,
)
from tenants.runs.models import DecisionEvent, Run, RunItem, SideEffect, StepCheckpoint
from tenants.sandbox.models import SandboxRecord

__all__ = [
    "Agent",
    "AgentHealth",
    "AgentVersion",
    "ApiKey",
    "Base",
    "DecisionEvent",
    "FailureHourly",
    "LatestFailure",
    "ReliabilityCounter",
    "Run",
    "RunItem",
    "RunRollupHourly",
    "SandboxRecord",
    "SideEffect",
    "StepCheckpoint",
    "StepStatDaily",
    "Tenant",
]
