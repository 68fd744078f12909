"""The Runs page's queries: search (index lookups) and one run's timeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tenants.reliability.common import RunRow, run_row, tenant_names
from tenants.reliability.repository import PlatformReliabilityRepository
from tenants.runs.events import verify_chain

__all__ = ["RunDetail", "run_detail", "search_runs"]


def search_runs(session: Session, *, tenant_id: str | None = None, agent_name: str | None = None,
                state: str | None = None, run_id: str | None = None, limit: int = 100) -> tuple[RunRow, ...]:
    """Newest runs matching every given filter (index lookups, bounded by ``limit``)."""
    repo = PlatformReliabilityRepository(session)
    names = tenant_names(repo)
    runs = repo.search_runs(tenant_id=tenant_id or None, agent_name=agent_name or None, state=state or None,
                            run_id=(run_id or "").strip() or None, limit=limit)
    return tuple(run_row(r, names) for r in runs)


@dataclass(frozen=True, slots=True)
class RunDetail:
    """One run's timeline: items, decision events, checkpoints, side effects and its chain check."""

    run: RunRow
    items: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]
    checkpoints: tuple[dict[str, Any], ...]
    side_effects: tuple[dict[str, Any], ...]
    retries: int
    chain_ok: bool
    chain_note: str


def run_detail(session: Session, run_id: str, *, limit: int = 1000) -> RunDetail | None:
    """One run's timeline: items, decision events, checkpoints (attempts), side effects, cost."""
    repo = PlatformReliabilityRepository(session)
    run = repo.run(run_id)
    if run is None:
        return None
    names = tenant_names(repo)
    events = repo.run_events(run_id, limit)
    verdict = verify_chain({c.key: getattr(e, c.key) for c in e.__table__.columns} for e in events)
    cps = repo.run_checkpoints(run_id, limit)
    return RunDetail(
        run=run_row(run, names),
        items=tuple({"item": i.item_index, "state": i.state, "category": i.failure_category, "reason": i.reason,
                     "steps_used": i.steps_used, "llm_calls": i.llm_calls, "updated_at": i.updated_at}
                    for i in repo.run_items(run_id, limit)),
        events=tuple({"seq": e.seq, "at": e.created_at, "kind": e.kind, "item": e.item_index, "step": e.step_id,
                      "considered": e.considered, "chose": e.chosen, "why": e.why, "category": e.failure_category,
                      "cost_usd": float(e.cost_usd or 0), "latency_ms": float(e.latency_ms or 0)} for e in events),
        checkpoints=tuple({"item": c.item_index, "step_index": c.step_index, "step": c.step_id, "status": c.status,
                           "attempts": c.attempts, "retries": max(0, c.attempts - 1),
                           "latency_ms": float(c.latency_ms or 0), "output_hash": c.output_hash[:12],
                           "at": c.created_at} for c in cps),
        side_effects=tuple({"idempotency_key": s.idempotency_key, "item": s.item_index, "step": s.step_id,
                            "tool": s.tool, "outcome": s.state, "attempts": s.attempts,
                            "created_at": s.created_at, "completed_at": s.completed_at}
                           for s in repo.run_side_effects(run_id, limit)),
        retries=sum(max(0, c.attempts - 1) for c in cps),
        chain_ok=verdict.ok,
        chain_note=("no decision events recorded" if not verdict.events
                    else f"{verdict.events} decision events, hash chain intact" if verdict.ok
                    else f"hash chain broken at seq {verdict.first_bad_seq}: {verdict.reason}"),
    )
