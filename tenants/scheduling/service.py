"""Scheduling rules on the operator's side: tenant weights, suspension and resumption. Never commits.

Suspending a tenant refuses its keys (tenants.accounts), takes its queued runs out of the queue (state
``suspended``) and asks its running runs to stop at their next step boundary (the worker's fenced write
reads ``suspend_requested`` and releases the run as ``suspended``); the claim never picks a suspended
tenant's run. Resuming puts every suspended run back in the queue exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from tenants.accounts.models import Tenant
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import KEYS
from tenants.kit.db import enqueue_after_commit
from tenants.kit.errors import InvalidInput, NotFound
from tenants.kit.ids import utcnow
from tenants.runs.service import EXECUTE_RUN, wake_grace
from tenants.scheduling.models import MAX_WEIGHT
from tenants.scheduling.repository import ScheduleRepository

__all__ = ["Scheduling", "get_scheduling", "set_tenant_status", "set_weight", "waiting_reason"]


@dataclass(frozen=True, slots=True)
class Scheduling:
    """A tenant's scheduling settings and state."""

    tenant: str
    weight: int
    running: int
    cap: int | None


def _tenant(session: Session, name: str) -> Tenant:
    tenant = AccountsPlatformRepository(session).tenant_by_name(name)
    if tenant is None:
        raise NotFound(f"tenant {name!r} not found")
    return tenant


def get_scheduling(session: Session, name: str) -> Scheduling:
    tenant = _tenant(session, name)
    row = ScheduleRepository(session, tenant.id).get()
    return Scheduling(tenant.name, row.weight if row else 1, row.running if row else 0, row.cap if row else None)


def set_weight(session: Session, name: str, weight: int) -> tuple[Scheduling, Scheduling]:
    """Give a tenant ``weight`` shares of worker time against other tenants with work (1..100); returns
    (before, after) for the audit trail."""
    if not 1 <= weight <= MAX_WEIGHT:
        raise InvalidInput(f"weight must be between 1 and {MAX_WEIGHT}", field="weight")
    before = get_scheduling(session, name)
    ScheduleRepository(session, _tenant(session, name).id).set_weight(weight, utcnow())
    return before, get_scheduling(session, name)


def set_tenant_status(session: Session, name: str, status: str) -> tuple[Tenant, str, int]:
    """Suspend (``suspended``) or resume (``active``) a tenant; returns it, its status before, and how many
    runs were held or released at once (running ones stop at their next step boundary)."""
    tenant = _tenant(session, name)
    before = tenant.status
    tenant.status = status
    session.flush()
    now = utcnow()
    schedule = ScheduleRepository(session, tenant.id)
    if status == "suspended":
        moved = schedule.hold_runs(now)
    else:
        moved = schedule.release_held(now, now + wake_grace())
        for run_id in moved[:64]:  # workers keep claiming while runs are due: a few wake-ups drain them all
            enqueue_after_commit(session, EXECUTE_RUN, tenant_id=tenant.id, run_id=run_id)
    KEYS.clear()  # this process refuses the tenant's keys at once; other API processes within AUTH_CACHE_S
    return tenant, before, len(moved)


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
