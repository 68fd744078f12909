"""Scheduling rules on the operator's side: tenant weights. Never commits.

Suspension and resumption move runs, so they are tenants.runs.service.set_tenant_status.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from tenants.accounts.service import tenant_named
from tenants.kit.errors import InvalidInput
from tenants.kit.ids import utcnow
from tenants.scheduling.models import MAX_WEIGHT
from tenants.scheduling.repository import ScheduleRepository

__all__ = ["Scheduling", "get_scheduling", "set_weight", "waiting_reason"]


@dataclass(frozen=True, slots=True)
class Scheduling:
    """A tenant's scheduling settings and state."""

    tenant: str
    weight: int
    running: int
    cap: int | None


def get_scheduling(session: Session, name: str) -> Scheduling:
    tenant = tenant_named(session, name)
    row = ScheduleRepository(session, tenant.id).get()
    return Scheduling(tenant.name, row.weight if row else 1, row.running if row else 0, row.cap if row else None)


def set_weight(session: Session, name: str, weight: int) -> tuple[Scheduling, Scheduling]:
    """Give a tenant ``weight`` shares of worker time against other tenants with work (1..100); returns
    (before, after) for the audit trail."""
    if not 1 <= weight <= MAX_WEIGHT:
        raise InvalidInput(f"weight must be between 1 and {MAX_WEIGHT}", field="weight")
    before = get_scheduling(session, name)
    ScheduleRepository(session, tenant_named(session, name).id).set_weight(weight, utcnow())
    return before, get_scheduling(session, name)


def waiting_reason(session: Session, tenant_id: str, agent_name: str) -> str | None:
    """Why a queued run of ``agent_name`` is not running yet, when a cap holds it (computed when asked: the
    queue writes nothing per run while a tenant is capped)."""
    schedule = ScheduleRepository(session, tenant_id)
    row = schedule.get()
    if row is not None and row.cap is not None and row.running >= row.cap:
        return (f"waiting for a concurrency slot: the tenant's concurrent_runs limit is {row.cap} and "
                f"{row.running} runs are running")
    agent = schedule.agent(agent_name)
    if agent is not None and agent.cap is not None and agent.running >= agent.cap:
        return (f"waiting for a concurrency slot: agent {agent_name!r} may run {agent.cap} at once and "
                f"{agent.running} are running")
    return None
