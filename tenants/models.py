"""Imports every domain's tables so ``Base.metadata`` is complete (Alembic and tests use this)."""

from tenants.accounts.models import ApiKey, ApiKeyWindow, Tenant
from tenants.agents.models import Agent, AgentVersion
from tenants.approvals.models import Approval
from tenants.audit.models import AuditEvent, AuditHead
from tenants.budgets.models import Budget, BudgetEvent, BudgetLimit, BudgetReservation
from tenants.catalog.models import BreakerRecord, ModelRecord, ToolRecord
from tenants.kit.db import Base
from tenants.observability.models import WorkerHeartbeat
from tenants.rehearsals.models import Rehearsal, RehearsalPolicy
from tenants.reliability.models import (
    AgentHealth,
    FailureHourly,
    LatestFailure,
    ReadModelCursor,
    ReliabilityCounter,
    RunRollupHourly,
    StepStatDaily,
)
from tenants.runs.models import DecisionEvent, LoopCall, Run, RunItem, SideEffect, StepCheckpoint
from tenants.sandbox.models import SandboxRecord
from tenants.scheduling.models import AgentSchedule, TenantSchedule
from tenants.secrets.models import MasterKeyRecord, Secret, SecretVersion
from tenants.security.models import ScopeViolation
from tenants.webhooks.models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "Agent",
    "AgentHealth",
    "AgentSchedule",
    "AgentVersion",
    "ApiKey",
    "ApiKeyWindow",
    "Approval",
    "AuditEvent",
    "AuditHead",
    "Base",
    "BreakerRecord",
    "Budget",
    "BudgetEvent",
    "BudgetLimit",
    "BudgetReservation",
    "DecisionEvent",
    "FailureHourly",
    "LatestFailure",
    "LoopCall",
    "MasterKeyRecord",
    "ModelRecord",
    "ReadModelCursor",
    "Rehearsal",
    "RehearsalPolicy",
    "ReliabilityCounter",
    "Run",
    "RunItem",
    "RunRollupHourly",
    "SandboxRecord",
    "ScopeViolation",
    "Secret",
    "SecretVersion",
    "SideEffect",
    "StepCheckpoint",
    "StepStatDaily",
    "Tenant",
    "TenantSchedule",
    "ToolRecord",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WorkerHeartbeat",
]
