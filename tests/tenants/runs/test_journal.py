"""The journal has one interface and two implementations (PostgreSQL: one statement; SQLite: one after the
other). The same writes leave the same rows on both, and a stale fence writes nothing on either."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from tenants.kit.errors import LeaseLost
from tenants.kit.settings import Settings
from tenants.migrations import upgrade
from tenants.runs.events import GENESIS, event_hash
from tenants.runs.journal import JournalWrite, Release, journal_repository
from tenants.runs.models import DecisionEvent, LoopCall, Run, RunItem, SideEffect, StepCheckpoint
from tenants.scheduling.models import AgentSchedule, TenantSchedule
from tests.tenants.reliability.history import ensure_tenant

T0 = datetime(2026, 11, 20, 3, 0, 0, tzinfo=UTC)


@pytest.fixture
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Session]]:
    out = {}
    engines = []
    sqlite_url = f"sqlite:///{tmp_path / 'j.db'}"
    pg_url = Settings(database_url=request.getfixturevalue("pg_schema_url")).sqlalchemy_url
    for name, url in (("sqlite", sqlite_url), ("postgres", pg_url)):
        upgrade(url=url)
        engine = create_engine(url)
        engines.append(engine)
        out[name] = Session(engine)
    yield out
    for s in out.values():
        s.rollback()
        s.close()
    for engine in engines:
        engine.dispose()


def _event(seq: int, prev: str, kind: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": "run_j1", "seq": seq, "kind": kind, "item_index": fields.get("item_index"),
                           "step_index": fields.get("step_index"), "step_id": fields.get("step_id"),
                           "considered": ["a", "b"], "chosen": "a", "why": "because", "verdicts": [{"ok": True}],
                           "failure_category": None, "cost_usd": Decimal("0.5"), "latency_ms": 1.5, "attempts": 1,
                           "input_hash": "i" * 64, "output_hash": "o" * 64, "created_at": T0, "prev_hash": prev}
    row["hash"] = event_hash(prev, row)
    return row


def _scenario(session: Session, tenant: str) -> dict[str, Any]:
    agent_id, version_id = ensure_tenant(session, tenant, "agent")
    session.add(Run(id="run_j1", tenant_id=tenant, agent_id=agent_id, agent_name="agent", agent_version_id=version_id,
                    agent_version=1, state="running", is_batch=True, items_total=2, items_done=0, items_failed=0,
                    steps_done=0, llm_calls=0, cost_usd=Decimal(0), fence=7, crash_count=0, cancel_requested=False,
                    lease_owner="w", lease_until=T0, created_at=T0, updated_at=T0))
    session.add_all([RunItem(run_id="run_j1", item_index=i, tenant_id=tenant, input={"n": i}, state="pending",
                             steps_used=0, llm_calls=0, next_attempt=2) for i in range(2)])
    session.add(SideEffect(idempotency_key="mw-run_j1-0-0", tenant_id=tenant, run_id="run_j1", item_index=0,
                           step_index=0, step_id="s0", tool="t", state="intent", attempts=1, created_at=T0))
    session.add(TenantSchedule(tenant_id=tenant, weight=2, vtime=1.0, avg_slice_s=0.05, running=1))
    session.add(AgentSchedule(tenant_id=tenant, agent_name="agent", running=1))
    session.flush()
    repo = journal_repository(session, tenant)
    e1 = _event(1, GENESIS, "run.started")
    e2 = _event(2, e1["hash"], "step.succeeded", item_index=0, step_index=0, step_id="s0")
    flags = repo.write(JournalWrite(
        run_id="run_j1", fence=7, now=T0, steps=1, items_done=1,
        cost_usd=Decimal("0.5"), events=[e1, e2],
        checkpoint={"item_index": 0, "step_index": 0, "step_id": "s0", "status": "succeeded",
                    "output": {"x": [1, "two"]}, "output_hash": "o" * 64, "attempts": 2, "latency_ms": 3.25,
                    "fence": 7, "created_at": T0},
        item_end={"item_index": 0, "state": "done", "steps_used": 1, "llm_calls": 0},
        item_attempt=(0, 1),
        side_effect=("mw-run_j1-0-0", {"state": "succeeded", "outcome": {"ok": True}, "completed_at": T0}),
        loop_call={"item_index": 0, "step_index": 0, "iteration": 1, "call_index": 1, "call_id": "call_1",
                   "tool": "t", "model": None, "args": {"a": 1}, "message": "{\"role\": \"tool\", \"content\": \"{}\"}",
                   "is_error": False, "idempotency_key": None, "cost_usd": Decimal(0), "llm_calls": 0, "fence": 7,
                   "created_at": T0},
        intent={"idempotency_key": "mw-run_j1-1-0", "item_index": 1, "step_index": 0, "step_id": "s0",
                "tool": "t", "state": "intent", "attempts": 1, "created_at": T0}), durable=False)
    session.flush()
    # a step's write leaves the lease alone (the lease keeper renews it): the run UPDATE stays HOT
    lease_after_step = session.scalar(select(Run.lease_until).where(Run.tenant_id == tenant, Run.id == "run_j1"))
    again = repo.write(JournalWrite(
        run_id="run_j1", fence=7, now=T0,
        intent={"idempotency_key": "mw-run_j1-1-0", "item_index": 1, "step_index": 0, "step_id": "s0",
                "tool": "t", "state": "intent", "attempts": 1, "created_at": T0}))
    e3 = _event(3, e2["hash"], "run.succeeded")
    repo.write(JournalWrite(run_id="run_j1", fence=7, now=T0 + timedelta(seconds=1), items_done=1,
                            events=[e3], release=Release(state="succeeded", reason=None, finished=True,
                                                         slice_s=0.25)))
    with pytest.raises(LeaseLost):  # a zombie's write: nothing
        repo.write(JournalWrite(run_id="run_j1", fence=6, now=T0, steps=1))
    session.flush()
    return {"flags": (flags.cancel_requested, flags.suspend_requested, flags.intent_recorded,
                      again.intent_recorded), "lease_after_step": lease_after_step, **_rows(session, tenant)}


def _rows(s: Session, tenant: str) -> dict[str, Any]:
    def plain(obj: Any, skip: tuple[str, ...] = ()) -> tuple[Any, ...]:
        cols = [c.key for c in obj.__table__.columns if c.key not in ("tenant_id", "id", *skip)]
        return tuple((c, _norm(getattr(obj, c))) for c in sorted(cols))

    return {
        "run": [plain(r, ("agent_id", "agent_version_id"))
                for r in s.scalars(select(Run).where(Run.tenant_id == tenant))],
        "items": [plain(i) for i in s.scalars(select(RunItem).where(RunItem.tenant_id == tenant)
                                              .order_by(RunItem.item_index))],
        "checkpoints": [plain(c) for c in s.scalars(select(StepCheckpoint).where(StepCheckpoint.tenant_id == tenant))],
        "events": [plain(e) for e in s.scalars(select(DecisionEvent).where(DecisionEvent.tenant_id == tenant)
                                               .order_by(DecisionEvent.seq))],
        "side_effects": [plain(e) for e in s.scalars(select(SideEffect).where(SideEffect.tenant_id == tenant)
                                                     .order_by(SideEffect.idempotency_key))],
        "loop_calls": [plain(c) for c in s.scalars(select(LoopCall).where(LoopCall.tenant_id == tenant))],
        "schedules": [plain(t, ("updated_at",)) for t in s.scalars(select(TenantSchedule)
                                                                    .where(TenantSchedule.tenant_id == tenant))]
        + [plain(a) for a in s.scalars(select(AgentSchedule).where(AgentSchedule.tenant_id == tenant))],
    }


def _norm(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return round(value, 6)
    return value


@pytest.mark.postgres
def test_both_journals_write_the_same_rows(sessions: dict[str, Session]) -> None:
    tenant = f"tnt_j{secrets.token_hex(6)}"
    results = {name: _scenario(s, tenant) for name, s in sessions.items()}
    assert results["sqlite"]["flags"] == (False, False, True, False)
    assert results["sqlite"]["lease_after_step"] == T0
    for part in results["sqlite"]:
        assert results["postgres"][part] == results["sqlite"][part], part
    run = dict(results["sqlite"]["run"][0])
    assert (run["state"], run["lease_owner"], run["steps_done"], run["items_done"], run["event_seq"]) == (
        "succeeded", None, 1, 2, 3)
    tenant = dict(results["sqlite"]["schedules"][0])
    assert tenant["running"] == 0 and tenant["vtime"] == pytest.approx(1.0 + (0.25 - 0.05) / 2)


def _release_by_journal(session: Session, tenant: str, run_id: str) -> None:
    journal_repository(session, tenant).write(JournalWrite(
        run_id=run_id, fence=7, now=T0,
        release=Release(state="succeeded", reason=None, finished=True, slice_s=0.1)))


def _release_by_sweeper(session: Session, tenant: str, run_id: str) -> None:
    from tenants.runs.dispatch import dispatch_repository

    assert [w.run_id for w in dispatch_repository(session).recover_expired(T0 + timedelta(hours=1), T0)
            if w.tenant_id == tenant] == [run_id]


@pytest.mark.postgres
@pytest.mark.parametrize("release", [_release_by_journal, _release_by_sweeper], ids=["journal", "sweeper"])
def test_a_released_slot_locks_the_tenants_schedule_before_the_agents(pg_schema_url: str, release: Any) -> None:
    """The claim locks a tenant's schedule row, then its agent's. A run's end (and the sweeper's recovery) must
    take them in the same order, or a claim and a finish of one tenant deadlock under load (each waited a
    second for PostgreSQL's deadlock detector: the throughput benchmark stalled). PostgreSQL runs unreferenced
    data-modifying CTEs in no promised order, so the order must be forced. Here the tenant's row is held: the
    release must wait for it before it has touched the agent's row."""
    import threading
    import time

    from sqlalchemy import text

    url = Settings(database_url=pg_schema_url).sqlalchemy_url
    upgrade(url=url)
    engine = create_engine(url)
    tenant, run_id = f"tnt_l{secrets.token_hex(6)}", f"run_l{secrets.token_hex(6)}"
    with Session(engine) as s:
        agent_id, version_id = ensure_tenant(s, tenant, "agent")
        s.add(Run(id=run_id, tenant_id=tenant, agent_id=agent_id, agent_name="agent", agent_version_id=version_id,
                  agent_version=1, state="running", is_batch=False, items_total=1, items_done=0, items_failed=0,
                  steps_done=0, llm_calls=0, cost_usd=Decimal(0), fence=7, crash_count=0, cancel_requested=False,
                  lease_owner="w", lease_until=T0, created_at=T0, updated_at=T0))
        s.add(TenantSchedule(tenant_id=tenant, weight=1, vtime=0.0, avg_slice_s=0.05, running=1))
        s.add(AgentSchedule(tenant_id=tenant, agent_name="agent", running=1))
        s.commit()
    holder, prober = engine.connect(), engine.connect()
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            with Session(engine) as s:
                release(s, tenant, run_id)
                s.commit()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    try:
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
        holder.execute(text("SELECT 1 FROM tenant_schedules WHERE tenant_id = :t FOR UPDATE"), {"t": tenant})
        worker = threading.Thread(target=finish)
        worker.start()
        deadline = time.monotonic() + 10
        while not prober.execute(text("SELECT count(*) FROM pg_stat_activity WHERE :h = ANY(pg_blocking_pids(pid))"),
                                 {"h": holder_pid}).scalar_one():
            assert time.monotonic() < deadline, "the release never waited for the tenant's schedule row"
            prober.rollback()
        prober.rollback()
        # the release is waiting for the tenant's row: it must not hold the agent's yet
        assert prober.execute(text("SELECT running FROM agent_schedules WHERE tenant_id = :t "
                                   "FOR UPDATE NOWAIT"), {"t": tenant}).scalar_one() == 1
        prober.rollback()
        holder.rollback()
        worker.join(timeout=10)
        assert not worker.is_alive() and not errors, errors
        with Session(engine) as s:
            assert s.get(TenantSchedule, tenant).running == 0  # type: ignore[union-attr]
            assert s.get(AgentSchedule, (tenant, "agent")).running == 0  # type: ignore[union-attr]
    finally:
        holder.close()
        prober.close()
        with Session(engine) as s:  # the sweeper put it back in the queue: not for the session's other tests
            s.execute(update(Run).where(Run.id == run_id).values(state="cancelled", runnable_at=None, wake_at=None))
            s.commit()
        engine.dispose()
