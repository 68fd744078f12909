"""Imports every domain's tables so ``Base.metadata`` is complete (Alembic and tests use this)."""

from tenants.accounts.models import ApiKey, Tenant
from tenants.agents.models import Agent, AgentVersion
from tenants.budgets.models import Budget, BudgetEvent, BudgetLimit, BudgetReservation, BudgetSlot
from tenants.kit.db import Base
from tenants.runs.models import DecisionEvent, Run, RunItem, SideEffect, StepCheckpoint
from tenants.sandbox.models import SandboxRecord

__all__ = [
    "Agent",
    "AgentVersion",
    "ApiKey",
    "Base",
    "Budget",
    "BudgetEvent",
    "BudgetLimit",
    "BudgetReservation",
    "BudgetSlot",
    "DecisionEvent",
    "Run",
    "RunItem",
    "SandboxRecord",
    "SideEffect",
    "StepCheckpoint",
    "Tenant",
]
