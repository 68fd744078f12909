"""All SQL for rehearsal records and the deploy gate's policies."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Select, and_, bindparam, func, select, update
from sqlalchemy.orm import Session, defer

from tenants.accounts.models import Tenant
from tenants.agents.models import Agent, AgentVersion, VersionRef
from tenants.approvals.models import Approval
from tenants.kit.db import RawStatement, execute_raw
from tenants.kit.repository import PlatformRepository, TenantRepository, for_dialect
from tenants.rehearsals.models import Rehearsal, RehearsalPolicy
from tenants.runs.models import DecisionEvent, Run, RunItem, SideEffect

__all__ = ["GatedVersion", "PlatformRehearsalRepository", "PostgresRehearsalRepository", "RehearsalRepository",
           "SpaceRepository", "rehearsal_repository"]


GatedVersion = tuple[VersionRef, bool, str]  # (version, requires_rehearsal, min_profile)


@functools.cache
def _gated_version(latest: bool) -> Select[str, str, int, bool, str]:
    """The submission's one lookup, built once (its construction and cache key cost more than running it):
    the agent's latest (or ``:version``) version with the agent's gate, for ``:tenant_id`` and ``:name``."""
    tenant: BindParameter[str] = bindparam("tenant_id")
    return (select(AgentVersion.id, AgentVersion.agent_id, AgentVersion.version, RehearsalPolicy.requires_rehearsal,
                   RehearsalPolicy.min_profile)
            .join(Agent, and_(Agent.id == AgentVersion.agent_id, Agent.tenant_id == tenant))
            .outerjoin(RehearsalPolicy, and_(RehearsalPolicy.tenant_id == tenant,
                                             RehearsalPolicy.agent_name == Agent.name))
            .where(Agent.name == bindparam("name"), AgentVersion.tenant_id == tenant,
                   AgentVersion.version == (Agent.latest_version if latest else bindparam("version"))))


@functools.cache
def _gated_version_sql(latest: bool) -> RawStatement:
    """:func:`_gated_version` for PostgreSQL, straight through the driver (the submission's hot path)."""
    sql = """
        SELECT v.id, v.agent_id, v.version, p.requires_rehearsal, p.min_profile FROM agent_versions v
        JOIN agents a ON a.id = v.agent_id AND a.tenant_id = :tenant_id
        LEFT JOIN rehearsal_policies p ON p.tenant_id = :tenant_id AND p.agent_name = a.name
        WHERE a.name = :name AND v.tenant_id = :tenant_id AND v.version = """
    return RawStatement.of(sql + ("a.latest_version" if latest else ":version"))


class RehearsalRepository(TenantRepository):
    """A tenant's rehearsals and gate policies."""

    def add(self, rehearsal: Rehearsal) -> Rehearsal:
        rehearsal.tenant_id = self.tenant_id
        self.session.add(rehearsal)
        self.session.flush()
        return rehearsal

    def get(self, rehearsal_id: str) -> Rehearsal | None:
        return self.session.scalar(select(Rehearsal).where(Rehearsal.tenant_id == self.tenant_id,
                                                           Rehearsal.id == rehearsal_id))

    def list(self, *, agent: str | None, before: str | None, limit: int) -> Sequence[Rehearsal]:
        q = (select(Rehearsal).where(Rehearsal.tenant_id == self.tenant_id).options(defer(Rehearsal.report))
             .order_by(Rehearsal.id.desc()).limit(limit))
        if agent is not None:
            q = q.where(Rehearsal.agent_name == agent)
        if before is not None:
            q = q.where(Rehearsal.id < before)
        return self.session.scalars(q).all()

    def in_progress(self) -> Sequence[Rehearsal]:
        return self.session.scalars(select(Rehearsal).options(defer(Rehearsal.report)).where(
            Rehearsal.tenant_id == self.tenant_id, Rehearsal.state.in_(("queued", "running")))).all()

    def transition(self, rehearsal_id: str, *, from_states: Sequence[str], **values: Any) -> bool:
        """Move a rehearsal out of one of ``from_states``; False when it was in none of them."""
        result = self.session.execute(update(Rehearsal).where(
            Rehearsal.tenant_id == self.tenant_id, Rehearsal.id == rehearsal_id,
            Rehearsal.state.in_(tuple(from_states))).values(**values))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # ---- the deploy gate ------------------------------------------------------------------------
    def version_with_policy(self, name: str, version: int | None) -> GatedVersion | None:
        """The agent's version (its latest when ``version`` is None) and the agent's gate, in one query."""
        params: dict[str, Any] = {"tenant_id": self.tenant_id, "name": name}
        if version is not None:
            params["version"] = version
        return _gated(self.session.execute(_gated_version(version is None), params).first())

    def _passed(self, min_rank: int) -> Any:
        return select(Rehearsal.agent_version_id).where(
            Rehearsal.tenant_id == self.tenant_id, Rehearsal.source == "agent", Rehearsal.verdict == "pass",
            Rehearsal.profile_rank >= min_rank, Rehearsal.agent_version_id.is_not(None))

    def newest_passed_version(self, agent_id: str, min_rank: int) -> AgentVersion | None:
        return self.session.scalar(
            select(AgentVersion).where(AgentVersion.tenant_id == self.tenant_id, AgentVersion.agent_id == agent_id,
                                       AgentVersion.id.in_(self._passed(min_rank)))
            .order_by(AgentVersion.version.desc()).limit(1).options(defer(AgentVersion.spec)))

    def has_passed(self, version_id: str, min_rank: int) -> bool:
        return self.session.scalar(self._passed(min_rank).where(Rehearsal.agent_version_id == version_id)
                                   .limit(1)) is not None

    def policy(self, agent_name: str) -> RehearsalPolicy | None:
        return self.session.get(RehearsalPolicy, (self.tenant_id, agent_name))

    def put_policy(self, agent_name: str, *, requires_rehearsal: bool, min_profile: str, updated_by: str,
                   now: datetime) -> RehearsalPolicy:
        policy = self.policy(agent_name)
        if policy is None:
            policy = RehearsalPolicy(tenant_id=self.tenant_id, agent_name=agent_name)
            self.session.add(policy)
        policy.requires_rehearsal = requires_rehearsal
        policy.min_profile = min_profile
        policy.updated_by = updated_by
        policy.updated_at = now
        self.session.flush()
        return policy


class PlatformRehearsalRepository(PlatformRepository):
    """Across tenants, on purpose: the dashboard's rehearsal history and the reaper of abandoned rehearsals."""

    def history(self, *, limit: int) -> Sequence[tuple[Rehearsal, str]]:
        """The newest rehearsals with their tenant's name (reports deferred)."""
        rows = self.session.execute(
            select(Rehearsal, Tenant.name).join(Tenant, Tenant.id == Rehearsal.tenant_id)
            .options(defer(Rehearsal.report)).order_by(Rehearsal.id.desc()).limit(limit)).all()
        return [(r, str(n)) for r, n in rows]

    def report(self, rehearsal_id: str) -> Any:
        return self.session.scalar(select(Rehearsal.report).where(Rehearsal.id == rehearsal_id))

    def abandon(self, *, queued_before: datetime, running_before: datetime, now: datetime, reason: str) -> int:
        """Mark rehearsals nobody works on any more as ``error`` (a lost message, a vanished process)."""
        result = self.session.execute(update(Rehearsal).where(
            ((Rehearsal.state == "queued") & (Rehearsal.updated_at < queued_before))
            | ((Rehearsal.state == "running") & (Rehearsal.updated_at < running_before)))
            .values(state="error", error=reason, finished_at=now, updated_at=now))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def running_ids(self) -> set[str]:
        return {str(i) for i in self.session.scalars(select(Rehearsal.id).where(Rehearsal.state == "running"))}


class SpaceRepository(TenantRepository):
    """Reads of a rehearsal space's own database (its one tenant's runs), for the report."""

    def runs(self) -> Sequence[Run]:
        return self.session.scalars(select(Run).where(Run.tenant_id == self.tenant_id).order_by(Run.id)).all()

    def items(self) -> Sequence[RunItem]:
        return self.session.scalars(select(RunItem).where(RunItem.tenant_id == self.tenant_id)
                                    .order_by(RunItem.run_id, RunItem.item_index)).all()

    def step_events(self) -> Sequence[DecisionEvent]:
        """Every step outcome (``step.succeeded`` / ``step.failed``), one per item and step reached."""
        return self.session.scalars(select(DecisionEvent).where(
            DecisionEvent.tenant_id == self.tenant_id, DecisionEvent.kind.in_(("step.succeeded", "step.failed")))
            .order_by(DecisionEvent.id)).all()

    def deferrals(self) -> Sequence[DecisionEvent]:
        """Steps that released the worker to wait (a long Retry-After, an open circuit breaker)."""
        return self.session.scalars(select(DecisionEvent).where(
            DecisionEvent.tenant_id == self.tenant_id, DecisionEvent.kind == "step.deferred")
            .order_by(DecisionEvent.id)).all()

    def first_progress_after(self, run_id: str, at: datetime) -> datetime | None:
        """When the run next wrote a step outcome after ``at`` (None: not yet)."""
        return self.session.scalar(select(func.min(DecisionEvent.created_at)).where(
            DecisionEvent.tenant_id == self.tenant_id, DecisionEvent.run_id == run_id,
            DecisionEvent.kind.in_(("step.succeeded", "step.failed")), DecisionEvent.created_at > at))

    def states(self) -> dict[str, str]:
        return {str(i): str(s) for i, s in self.session.execute(
            select(Run.id, Run.state).where(Run.tenant_id == self.tenant_id)).all()}

    def approvals(self) -> Sequence[Approval]:
        return self.session.scalars(select(Approval).where(Approval.tenant_id == self.tenant_id)
                                    .order_by(Approval.id)).all()

    def pending_approvals(self) -> Sequence[str]:
        return [str(i) for i in self.session.scalars(select(Approval.id).where(
            Approval.tenant_id == self.tenant_id, Approval.state == "pending"))]

    def side_effects(self) -> Sequence[SideEffect]:
        return self.session.scalars(select(SideEffect).where(SideEffect.tenant_id == self.tenant_id)
                                    .order_by(SideEffect.idempotency_key)).all()


def _gated(row: Any) -> GatedVersion | None:
    return None if row is None else (VersionRef(row[0], row[1], row[2]), bool(row[3]), str(row[4] or "realistic"))


class PostgresRehearsalRepository(RehearsalRepository):
    """PostgreSQL: the submission's version lookup is one prepared statement through the driver."""

    def version_with_policy(self, name: str, version: int | None) -> GatedVersion | None:
        params: dict[str, Any] = {"tenant_id": self.tenant_id, "name": name, "version": version}
        return _gated(execute_raw(self.session, _gated_version_sql(version is None), params))


def rehearsal_repository(session: Session, tenant_id: str) -> RehearsalRepository:
    """The tenant's rehearsal repository for the session's database."""
    return for_dialect(session, RehearsalRepository, PostgresRehearsalRepository, tenant_id)
