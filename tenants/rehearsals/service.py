"""Rules for rehearsal records and the deploy gate. Never commits (the edge does).

A rehearsal requested through the API is stored ``queued`` and the ``run_rehearsal`` actor is woken after
commit; the command line stores its rehearsal ``running`` directly. Either way the orchestrator
(``runner.rehearsal``) moves it to ``finished`` with its report (verdict ``pass`` or ``fail``) or to
``error``. Only ``finished`` rehearsals of stored versions, rehearsed with the tenant's own catalog
(``source = agent``), count for the gate.

The gate (:func:`version_for_run`): for an agent whose policy ``requires_rehearsal``, a submission without
a version runs the newest version whose rehearsal passed with a profile at least the policy's
``min_profile``, and an explicit version that has not passed is refused with ``rehearsal_required``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from tenants.agents.models import AgentVersion, VersionRef
from tenants.agents.service import get_agent, get_version
from tenants.kit.db import enqueue_after_commit
from tenants.kit.errors import InvalidInput, NotFound
from tenants.kit.ids import new_id, utcnow
from tenants.rehearsals.errors import RehearsalInProgress, RehearsalRequired
from tenants.rehearsals.models import PROFILE_RANKS, Rehearsal, RehearsalPolicy
from tenants.rehearsals.repository import PlatformRehearsalRepository, RehearsalRepository, rehearsal_repository

__all__ = [
    "BUILTIN_PROFILES",
    "REHEARSE",
    "RUNNING_STALE",
    "Headline",
    "begin_rehearsal",
    "fail_rehearsal",
    "finish_rehearsal",
    "get_policy",
    "get_rehearsal",
    "history",
    "list_rehearsals",
    "profile_rank",
    "reap_abandoned",
    "report_of",
    "request_rehearsal",
    "set_policy",
    "start_rehearsal",
    "touch_rehearsal",
    "version_for_run",
]

REHEARSE = "run_rehearsal"  # the runner's actor, enqueued by name after commit
BUILTIN_PROFILES = ("gentle", "realistic", "hostile")
QUEUED_STALE = timedelta(minutes=15)  # a queued rehearsal whose wake-up was lost
RUNNING_STALE = timedelta(minutes=3)  # a running rehearsal whose orchestrator stopped touching it


@dataclass(frozen=True, slots=True)
class Headline:
    """A finished rehearsal's headline figures (also in its report), for lists and the gate."""

    verdict: str  # pass | fail
    measured: float | None
    projected: float | None
    slo: float | None
    pass_k: float | None
    duplicates: int
    recovery_s: float | None


def profile_rank(profile: str) -> int:
    """How demanding a profile is: ``gentle`` 1, ``realistic`` 2, ``hostile`` 3, anything custom 0."""
    return PROFILE_RANKS.get(profile, 0)


def _new(tenant_id: str, *, agent_name: str, version: AgentVersion | None, source: str, spec_hash: str,
         profile: str, options: Any, seed: int, items: int, repeat: int, requested_by: str, state: str) -> Rehearsal:
    now = utcnow()
    return Rehearsal(id=new_id("rhr"), tenant_id=tenant_id, agent_name=agent_name,
                     agent_version=version.version if version is not None else None,
                     agent_version_id=version.id if version is not None else None, source=source,
                     spec_hash=spec_hash, profile=profile, profile_rank=profile_rank(profile), options=options,
                     seed=seed, items=items, repeat=repeat, state=state, requested_by=requested_by[:64],
                     created_at=now, started_at=now if state == "running" else None, updated_at=now)


def request_rehearsal(session: Session, tenant_id: str, agent_name: str, version: int | None, *, profile: str,
                      options: Any, seed: int, items: int, repeat: int, requested_by: str) -> Rehearsal:
    """Store a queued rehearsal of the agent's version (its latest by default) and wake the actor after commit.

    One rehearsal per tenant at a time (it starts real processes): another queued or running one is a
    409 ``rehearsal_in_progress``.
    """
    reap_abandoned(session)
    found = get_version(session, tenant_id, agent_name, version)
    repo = RehearsalRepository(session, tenant_id)
    busy = repo.in_progress()
    if busy:
        raise RehearsalInProgress(f"rehearsal {busy[0].id} of agent {busy[0].agent_name!r} is {busy[0].state}; "
                                  "wait for it to finish", rehearsal_id=busy[0].id)
    rehearsal = repo.add(_new(tenant_id, agent_name=agent_name, version=found, source="agent",
                              spec_hash=found.spec_hash, profile=profile, options=options, seed=seed, items=items,
                              repeat=repeat, requested_by=requested_by, state="queued"))
    enqueue_after_commit(session, REHEARSE, tenant_id=tenant_id, rehearsal_id=rehearsal.id)
    return rehearsal


def begin_rehearsal(session: Session, tenant_id: str, *, agent_name: str, version: AgentVersion | None,
                    source: str, spec_hash: str, profile: str, options: Any, seed: int, items: int, repeat: int,
                    requested_by: str) -> Rehearsal:
    """Store a rehearsal that starts now (the command line runs it in its own process)."""
    return RehearsalRepository(session, tenant_id).add(_new(
        tenant_id, agent_name=agent_name, version=version, source=source, spec_hash=spec_hash, profile=profile,
        options=options, seed=seed, items=items, repeat=repeat, requested_by=requested_by, state="running"))


def start_rehearsal(session: Session, tenant_id: str, rehearsal_id: str) -> Rehearsal | None:
    """Claim a queued rehearsal for this worker (None if it is not queued any more: done, or taken)."""
    repo = RehearsalRepository(session, tenant_id)
    now = utcnow()
    if not repo.transition(rehearsal_id, from_states=["queued"], state="running", started_at=now, updated_at=now):
        return None
    return repo.get(rehearsal_id)


def touch_rehearsal(session: Session, tenant_id: str, rehearsal_id: str) -> None:
    """The orchestrator is alive (a running rehearsal not touched for :data:`RUNNING_STALE` is abandoned)."""
    RehearsalRepository(session, tenant_id).transition(rehearsal_id, from_states=["running"], updated_at=utcnow())


def finish_rehearsal(session: Session, tenant_id: str, rehearsal_id: str, report: dict[str, Any],
                     headline: Headline) -> None:
    """Store the report and its headline figures."""
    now = utcnow()
    RehearsalRepository(session, tenant_id).transition(
        rehearsal_id, from_states=["running"], state="finished", verdict=headline.verdict, measured=headline.measured,
        projected=headline.projected, slo=headline.slo, pass_k=headline.pass_k, duplicates=headline.duplicates,
        recovery_s=headline.recovery_s, report=report, finished_at=now, updated_at=now)


def fail_rehearsal(session: Session, tenant_id: str, rehearsal_id: str, error: str) -> None:
    """The rehearsal could not be carried out (not a verdict on the agent): say why."""
    now = utcnow()
    RehearsalRepository(session, tenant_id).transition(rehearsal_id, from_states=["queued", "running"],
                                                       state="error", error=error[:2000], finished_at=now,
                                                       updated_at=now)


def get_rehearsal(session: Session, tenant_id: str, rehearsal_id: str) -> Rehearsal:
    """The rehearsal or NotFound (also for another tenant's)."""
    found = RehearsalRepository(session, tenant_id).get(rehearsal_id)
    if found is None:
        raise NotFound(f"rehearsal {rehearsal_id!r} not found")
    return found


def list_rehearsals(session: Session, tenant_id: str, *, agent: str | None, before: str | None,
                    limit: int) -> Sequence[Rehearsal]:
    """The tenant's rehearsals, newest first (reports not loaded); abandoned ones are marked first."""
    reap_abandoned(session)
    return RehearsalRepository(session, tenant_id).list(agent=agent, before=before, limit=limit)


def reap_abandoned(session: Session) -> int:
    """Mark rehearsals whose orchestrator vanished (or whose wake-up was lost) as ``error``."""
    now = utcnow()
    return PlatformRehearsalRepository(session).abandon(
        queued_before=now - QUEUED_STALE, running_before=now - RUNNING_STALE, now=now,
        reason="abandoned: the process carrying out the rehearsal stopped (or its wake-up was lost); request it "
               "again")


# ---- the deploy gate ----------------------------------------------------------------------------

def get_policy(session: Session, tenant_id: str, agent_name: str) -> RehearsalPolicy:
    """The agent's gate (an unsaved default one, not required, if none was set)."""
    get_agent(session, tenant_id, agent_name)
    found = RehearsalRepository(session, tenant_id).policy(agent_name)
    if found is not None:
        return found
    return RehearsalPolicy(tenant_id=tenant_id, agent_name=agent_name, requires_rehearsal=False,
                           min_profile="realistic", updated_by="", updated_at=None)


def set_policy(session: Session, tenant_id: str, agent_name: str, *, requires_rehearsal: bool, min_profile: str,
               actor: str) -> RehearsalPolicy:
    """Set the agent's gate (the edge audits it, with the value before and after)."""
    if min_profile not in BUILTIN_PROFILES:
        raise InvalidInput(f"min_profile must be one of {', '.join(BUILTIN_PROFILES)}", field="min_profile")
    return RehearsalRepository(session, tenant_id).put_policy(
        agent_name, requires_rehearsal=requires_rehearsal, min_profile=min_profile, updated_by=actor, now=utcnow())


def version_for_run(session: Session, tenant_id: str, agent_name: str, version: int | None = None) -> VersionRef:
    """The version a submission runs: ``version``, else the latest; through the gate when the agent requires a
    rehearsal (one query when it does not). Raises NotFound or RehearsalRequired (409 ``rehearsal_required``)."""
    repo = rehearsal_repository(session, tenant_id)
    found = repo.version_with_policy(agent_name, version)
    if found is None:
        get_agent(session, tenant_id, agent_name)  # NotFound for the agent itself
        raise NotFound(f"agent {agent_name!r} has no version {version}")
    chosen, required, min_profile = found
    if not required:
        return chosen
    rank = profile_rank(min_profile)
    if version is not None:
        if repo.has_passed(chosen.id, rank):
            return chosen
        raise RehearsalRequired(
            f"agent {agent_name!r} requires a passed rehearsal (profile {min_profile} or harder) and version "
            f"{version} has none: run `midwatch rehearse {agent_name}` or POST /v1/agents/{agent_name}/rehearsals",
            agent=agent_name, version=version)
    passed = repo.newest_passed_version(chosen.agent_id, rank)
    if passed is not None:
        return VersionRef(passed.id, passed.agent_id, passed.version)
    raise RehearsalRequired(
        f"agent {agent_name!r} requires a passed rehearsal (profile {min_profile} or harder) and no version has "
        f"one yet: rehearse version {chosen.version} first", agent=agent_name, version=chosen.version)


def history(session: Session, *, limit: int = 500) -> Sequence[tuple[Rehearsal, str]]:
    """Every tenant's newest rehearsals with the tenant's name (the operator dashboard)."""
    return PlatformRehearsalRepository(session).history(limit=limit)


def report_of(session: Session, rehearsal_id: str) -> Any:
    """One rehearsal's stored report (the operator dashboard)."""
    return PlatformRehearsalRepository(session).report(rehearsal_id)
