"""The seed's bulk-loaded read models equal what the runner's hooks record for the same runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tenants.migrations import upgrade
from tenants.reliability.models import AgentHealth, FailureHourly, LatestFailure, RunRollupHourly
from tenants.reliability.service import record_run_finished, record_run_started
from tenants.runs.models import TERMINAL_STATES, Run
from tests.dashboard.conftest import SeededDb


def _snapshot(s: Session) -> dict[str, set[Any]]:
    return {
        "rollups": {(r.tenant_id, r.agent_name, r.hour, r.started, r.succeeded, r.failed, r.escalated, r.cancelled,
                     r.budget_exhausted, r.duration_ms_sum, r.cost_usd_sum)
                    for r in s.scalars(select(RunRollupHourly))},
        "failures": {(f.tenant_id, f.agent_name, f.hour, f.category, f.count)
                     for f in s.scalars(select(FailureHourly))},
        "health": {(h.tenant_id, h.agent_name, h.last_state, h.open_since_ms, h.consecutive_failures, h.incidents,
                    h.recovery_ms_sum) for h in s.scalars(select(AgentHealth))},
        "latest": {(f.tenant_id, f.slot, f.seq, f.run_id, f.category) for f in s.scalars(select(LatestFailure))},
    }


def test_seeded_rollups_match_a_replay_of_the_runner_hooks(seeded_db: SeededDb, tmp_path: Path) -> None:
    from tenants.kit.db import read_only

    with read_only() as source:
        expected = _snapshot(source)
        runs = source.scalars(select(Run)).all()
        source.expunge_all()
    replay_url = f"sqlite:///{tmp_path / 'replay.db'}"
    upgrade(url=replay_url)
    engine = create_engine(replay_url)
    with Session(engine) as s:
        for run in runs:
            if run.started_at is not None:
                record_run_started(s, run.tenant_id, run.agent_name, at=run.started_at)
        for run in sorted((r for r in runs if r.state in TERMINAL_STATES), key=lambda r: r.finished_at):
            assert run.finished_at is not None
            record_run_finished(s, run.tenant_id, run.agent_name, run.id, state=run.state,
                                category=run.failure_category, reason=run.reason, started_at=run.started_at,
                                finished_at=run.finished_at, cost_usd=run.cost_usd)
        s.flush()
        got = _snapshot(s)
    engine.dispose()
    for name in expected:
        assert got[name] == expected[name], name
    assert len(expected["rollups"]) > 100


def test_seeded_specs_are_valid_agent_specs(seeded_db: SeededDb) -> None:
    from runner.spec import load_spec
    from tenants.kit.db import read_only
    from tenants.reliability.repository import PlatformReliabilityRepository

    with read_only() as s:
        specs = PlatformReliabilityRepository(s).latest_specs()
    assert specs
    for _, name, _, spec in specs:
        assert load_spec(spec).name == name
