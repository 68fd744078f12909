"""Imports every domain's tables so ``Base.metadata`` is complete (Alembic and tests use this)."""

from tenants.accounts.models import ApiKey, Tenant
from tenants.agents.models import Agent, AgentVersion
from tenants.audit.models import AuditEvent, AuditHead
from tenants.catalog.models import BreakerRecord, ModelRecord, ToolRecord
from tenants.kit.db import Base
from tenants.runs.models import DecisionEvent, Run, RunItem, SideEffect, StepCheckpoint
from tenants.sandbox.models import SandboxRecord
from tenants.secrets.models import MasterKeyRecord, Secret, SecretVersion
from tenants.webhooks.models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "Agent",
    "AgentVersion",
    "ApiKey",
    "AuditEvent",
    "AuditHead",
    "Base",
    "BreakerRecord",
    "DecisionEvent",
    "MasterKeyRecord",
    "ModelRecord",
    "Run",
    "RunItem",
    "SandboxRecord",
    "Secret",
    "SecretVersion",
    "SideEffect",
    "StepCheckpoint",
    "Tenant",
    "ToolRecord",
    "WebhookDelivery",
    "WebhookEndpoint",
]
