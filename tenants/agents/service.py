"""Rules for storing agent specs: a PUT stores a new immutable version unless the spec is unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tenants.agents.models import Agent, AgentVersion
from tenants.agents.repository import AgentRepository
from tenants.kit.errors import Conflict, NotFound, found
from tenants.kit.ids import new_id, sha256_hex, utcnow

__all__ = ["StoredVersion", "get_agent", "get_version", "store_version", "version_spec"]

MAX_VERSION = 2**31 - 1  # the column is a 32-bit INTEGER; a larger number cannot exist (nor be bound)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    agent: Agent
    version: AgentVersion
    created: bool  # False when the same spec was already the latest version


def store_version(session: Session, tenant_id: str, name: str, spec: dict[str, Any],
                  warnings: list[dict[str, Any]]) -> StoredVersion:
    """Store ``spec`` (already validated) as the agent's next version."""
    repo = AgentRepository(session, tenant_id)
    now = utcnow()
    agent = repo.by_name(name, for_update=True)
    if agent is None:
        try:
            with session.begin_nested():
                agent = repo.add_agent(Agent(id=new_id("agt"), tenant_id=tenant_id, name=name, latest_version=0,
                                             created_at=now, updated_at=now))
        except IntegrityError:
            agent = repo.by_name(name, for_update=True)
            assert agent is not None
    spec_hash = sha256_hex(spec)
    if agent.latest_version:
        latest = repo.version(agent.id, agent.latest_version)
        if latest is not None and latest.spec_hash == spec_hash:
            return StoredVersion(agent=agent, version=latest, created=False)
    version = AgentVersion(id=new_id("agv"), tenant_id=tenant_id, agent_id=agent.id,
                           version=agent.latest_version + 1, spec=spec, spec_hash=spec_hash,
                           warnings=warnings, created_at=now)
    try:
        with session.begin_nested():
            repo.add_version(version)
    except IntegrityError as exc:
        raise Conflict("another version of this agent was stored concurrently; retry") from exc
    session.refresh(agent)
    return StoredVersion(agent=agent, version=version, created=True)


def get_agent(session: Session, tenant_id: str, name: str) -> Agent:
    """The agent or NotFound."""
    return found(AgentRepository(session, tenant_id).by_name(name), f"agent {name!r}")


def version_spec(session: Session, tenant_id: str, version_id: str) -> dict[str, Any]:
    """A stored version's spec JSON by the version's id, or NotFound."""
    return found(AgentRepository(session, tenant_id).version_by_id(version_id), f"agent version {version_id!r}").spec


def get_version(session: Session, tenant_id: str, name: str, version: int | None = None) -> AgentVersion:
    """A version (the latest by default) or NotFound."""
    if version is None:
        latest = AgentRepository(session, tenant_id).latest(name)
        if latest is not None:
            return latest
    agent = get_agent(session, tenant_id, name)
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise NotFound(f"agent {name!r} has no version {version}")
    found = AgentRepository(session, tenant_id).version(agent.id, agent.latest_version if version is None else version)
    if found is None:
        raise NotFound(f"agent {name!r} has no version {version}")
    return found
