"""All SQL for a tenant's scheduling settings: weight, caps and the running counters they bound.

The claim that reads them, and the sweeper that corrects them, are tenants.runs.dispatch's; the release
(running - 1, virtual time corrected by the slice's real cost) is tenants.runs.journal's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from tenants.kit.db import insert_ignore
from tenants.kit.repository import TenantRepository
from tenants.scheduling.models import DEFAULT_SLICE_S, AgentSchedule, TenantSchedule

__all__ = ["ScheduleRepository"]


class ScheduleRepository(TenantRepository):
    """One tenant's scheduling settings: weight and caps."""

    def get(self) -> TenantSchedule | None:
        return self.session.get(TenantSchedule, self.tenant_id)

    def ensure(self) -> TenantSchedule:
        """The tenant's schedule row, created with defaults if missing."""
        self.session.execute(insert_ignore(self.session, TenantSchedule, "tenant_id")
                             .values(tenant_id=self.tenant_id, weight=1, vtime=0.0, avg_slice_s=DEFAULT_SLICE_S,
                                     running=0))
        row = self.session.scalar(select(TenantSchedule).where(TenantSchedule.tenant_id == self.tenant_id)
                                  .with_for_update())
        assert row is not None
        return row

    def set_weight(self, weight: int, now: datetime) -> None:
        self.ensure()
        self.session.execute(update(TenantSchedule).where(TenantSchedule.tenant_id == self.tenant_id)
                             .values(weight=weight, updated_at=now))

    def set_caps(self, tenant_cap: int | None, agent_caps: dict[str, int]) -> None:
        """Mirror the tenant's concurrent_runs limits: the tenant-wide cap and one per named agent."""
        self.ensure()
        self.session.execute(update(TenantSchedule).where(TenantSchedule.tenant_id == self.tenant_id)
                             .values(cap=tenant_cap))
        self.session.execute(update(AgentSchedule).where(AgentSchedule.tenant_id == self.tenant_id)
                             .values(cap=None))
        for agent, cap in agent_caps.items():
            self.session.execute(insert_ignore(self.session, AgentSchedule, "tenant_id", "agent_name")
                                 .values(tenant_id=self.tenant_id, agent_name=agent, running=0))
            self.session.execute(update(AgentSchedule).where(AgentSchedule.tenant_id == self.tenant_id,
                                                             AgentSchedule.agent_name == agent).values(cap=cap))

    def agent(self, agent_name: str) -> AgentSchedule | None:
        return self.session.get(AgentSchedule, (self.tenant_id, agent_name))

    def agent_running(self) -> dict[str, int]:
        rows = self.session.execute(select(AgentSchedule.agent_name, AgentSchedule.running)
                                    .where(AgentSchedule.tenant_id == self.tenant_id)).all()
        return {str(a): int(n) for a, n in rows}

