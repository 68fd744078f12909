"""Recording and reading blocked scope violations. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from tenants.security.models import ScopeViolation
from tenants.security.repository import SecurityRepository

__all__ = ["list_violations", "record_violation"]


def record_violation(session: Session, tenant_id: str, *, run_id: str, agent_name: str, step_id: str, kind: str,
                     target: str, reason: str, at: datetime) -> None:
    """Remember a blocked attempt (in the engine's transaction); the dashboard's posture counts these."""
    SecurityRepository(session, tenant_id).add(ScopeViolation(
        tenant_id=tenant_id, run_id=run_id, agent_name=agent_name, step_id=step_id, kind=kind,
        target=target[:255], reason=reason, at=at))


def list_violations(session: Session, tenant_id: str, *, before: int | None, limit: int) -> Sequence[ScopeViolation]:
    return SecurityRepository(session, tenant_id).list(before=before, limit=limit)
