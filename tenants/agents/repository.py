"""All SQL for agents and their versions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, select, update
from sqlalchemy.orm import defer

from tenants.agents.models import Agent, AgentVersion
from tenants.kit.repository import TenantRepository

__all__ = ["AgentRepository"]


class AgentRepository(TenantRepository):
    """A tenant's agents and immutable agent versions."""

    def by_name(self, name: str, *, for_update: bool = False) -> Agent | None:
        q = select(Agent).where(Agent.tenant_id == self.tenant_id, Agent.name == name)
        if for_update:
            q = q.with_for_update()
        return self.session.scalar(q)

    def add_agent(self, agent: Agent) -> Agent:
        agent.tenant_id = self.tenant_id
        self.session.add(agent)
        self.session.flush()
        return agent

    def list(self, *, after: str | None, limit: int) -> Sequence[Agent]:
        q = select(Agent).where(Agent.tenant_id == self.tenant_id).order_by(Agent.name).limit(limit)
        if after:
            q = q.where(Agent.name > after)
        return self.session.scalars(q).all()

    def version(self, agent_id: str, version: int) -> AgentVersion | None:
        return self.session.scalar(
            select(AgentVersion).where(
                AgentVersion.tenant_id == self.tenant_id,
                AgentVersion.agent_id == agent_id,
                AgentVersion.version == version,
            )
        )

    def latest(self, name: str) -> AgentVersion | None:
        """The agent's newest version in one query; its spec JSON is loaded only when first accessed
        (callers keep parsed specs cached by version id)."""
        return self.session.scalar(
            select(AgentVersion).join(Agent, and_(Agent.id == AgentVersion.agent_id,
                                                  Agent.latest_version == AgentVersion.version))
            .where(Agent.tenant_id == self.tenant_id, Agent.name == name, AgentVersion.tenant_id == self.tenant_id)
            .options(defer(AgentVersion.spec)))

    def version_by_id(self, version_id: str) -> AgentVersion | None:
        return self.session.scalar(
            select(AgentVersion).where(AgentVersion.tenant_id == self.tenant_id, AgentVersion.id == version_id)
        )

    def versions(self, agent_id: str) -> Sequence[AgentVersion]:
        return self.session.scalars(
            select(AgentVersion)
            .where(AgentVersion.tenant_id == self.tenant_id, AgentVersion.agent_id == agent_id)
            .order_by(AgentVersion.version.desc())
        ).all()

    def add_version(self, version: AgentVersion) -> AgentVersion:
        version.tenant_id = self.tenant_id
        self.session.add(version)
        self.session.execute(
            update(Agent)
            .where(Agent.tenant_id == self.tenant_id, Agent.id == version.agent_id)
            .values(latest_version=version.version, updated_at=version.created_at)
        )
        self.session.flush()
        return version
