"""Test support: write a run history as the engine would (run rows and hash-chained decision events), so
read-model tests feed the deriver what it really reads."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from tenants.accounts.models import Tenant
from tenants.agents.models import Agent, AgentVersion
from tenants.runs.events import GENESIS, event_hash
from tenants.runs.models import DecisionEvent, Run

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Step:
    id: str
    ok: bool = True
    attempts: int = 1
    latency_ms: float = 100.0
    category: str | None = None


@dataclass
class History:
    """One run: started at ``started`` (None: never started), ended in ``state`` at ``finished``."""

    run_id: str
    state: str | None
    started: datetime | None
    finished: datetime | None = None
    category: str | None = None
    reason: str | None = None
    cost: Decimal = Decimal(0)
    steps: list[Step] = field(default_factory=list)
    agent: str = "a"
    created: datetime | None = None  # submission (default: the start, else the end); time-to-start = started - this
    runnable_at: datetime | None = None  # set: the run is in the dispatch queue, due at this time


def ensure_tenant(session: Session, tenant_id: str, agent: str) -> tuple[str, str]:
    """The tenant, agent and a version rows the runs point at (created once); (agent id, version id)."""
    if session.get(Tenant, tenant_id) is None:
        session.execute(insert(Tenant).values(id=tenant_id, name=f"t-{secrets.token_hex(4)}", display_name="t",
                                              status="active", created_at=EPOCH))
    found = session.execute(select(Agent.id, AgentVersion.id).join(AgentVersion, AgentVersion.agent_id == Agent.id)
                            .where(Agent.tenant_id == tenant_id, Agent.name == agent).limit(1)).first()
    if found is not None:
        return str(found[0]), str(found[1])
    agent_id = f"agt_{secrets.token_hex(8)}"
    version_id = f"agv_{agent_id}"
    session.execute(insert(Agent).values(id=agent_id, tenant_id=tenant_id, name=agent, latest_version=1,
                                         created_at=EPOCH, updated_at=EPOCH))
    session.execute(insert(AgentVersion).values(id=version_id, tenant_id=tenant_id, agent_id=agent_id, version=1,
                                                spec={}, spec_hash="0" * 64, warnings=[], created_at=EPOCH))
    return agent_id, version_id


def write_history(session: Session, tenant_id: str, runs: list[History]) -> None:
    """Insert each run and its events (run.started, one event per step outcome, run.<state>) in order."""
    for h in runs:
        agent_id, version_id = ensure_tenant(session, tenant_id, h.agent)
        events: list[dict[str, Any]] = []

        def event(kind: str, at: datetime, h: History = h, events: list[dict[str, Any]] = events,
                  **fields: Any) -> None:
            row: dict[str, Any] = {"tenant_id": tenant_id, "run_id": h.run_id, "seq": len(events) + 1, "kind": kind,
                                   "item_index": None, "step_index": None, "step_id": None, "considered": None,
                                   "chosen": None, "why": None, "verdicts": None, "failure_category": None,
                                   "cost_usd": Decimal(0), "latency_ms": 0.0, "attempts": None, "input_hash": None,
                                   "output_hash": None, "created_at": at, **fields}
            row["prev_hash"] = events[-1]["hash"] if events else GENESIS
            row["hash"] = event_hash(row["prev_hash"], row)
            events.append(row)

        created = h.created or h.started or h.finished or EPOCH
        session.execute(insert(Run).values(
            id=h.run_id, tenant_id=tenant_id, agent_id=agent_id, agent_name=h.agent, agent_version_id=version_id,
            agent_version=1, state=h.state or "queued", is_batch=False, items_total=1, items_done=0,
            items_failed=0, steps_done=0, llm_calls=0, cost_usd=h.cost, fence=1, crash_count=0,
            cancel_requested=False, runnable_at=h.runnable_at, created_at=created, started_at=h.started,
            finished_at=h.finished,
            updated_at=h.finished or created))
        if h.started is not None:
            event("run.started", h.started, why="first start")
        clock = h.started or created
        for index, step in enumerate(h.steps):
            clock += timedelta(milliseconds=step.latency_ms)
            event("step.succeeded" if step.ok else "step.failed", clock, step_id=step.id, step_index=index,
                  item_index=0, attempts=step.attempts, latency_ms=step.latency_ms,
                  failure_category=None if step.ok else step.category)
        if h.state is not None and h.finished is not None:
            event(f"run.{h.state}", h.finished, why=h.reason or "every item completed", failure_category=h.category,
                  cost_usd=h.cost)
        if events:
            session.execute(insert(DecisionEvent), events)
