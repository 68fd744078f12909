"""Every page, rendered with AppTest against the seeded database: the figures shown are the seeded facts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import SeededDb

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def _signed_in(db: SeededDb) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="operator_key").input(db.operator_key)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    return at


def _frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def _metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return str(m.value)
    raise AssertionError(f"no metric {label!r}: {[m.label for m in at.metric]}")


def _expected_success(since_hours: int) -> tuple[int, int]:
    """Succeeded and decided runs straight from the runs table (the test's own oracle)."""
    from datetime import timedelta

    from tenants.kit.db import read_only
    from tenants.kit.ids import utcnow
    from tenants.runs.models import Run

    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=since_hours - 1)
    with read_only() as s:
        rows = dict(s.execute(select(Run.state, func.count()).where(Run.finished_at >= start)
                              .group_by(Run.state)).all())
    decided = sum(n for st, n in rows.items() if st in ("succeeded", "failed", "escalated", "budget_exhausted"))
    return rows.get("succeeded", 0), decided


def test_sign_in_is_required_and_refuses_a_wrong_key(seeded_db: SeededDb) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert [m.value for m in at.subheader] == ["Operator sign-in"]
    at.text_input(key="operator_key").input("mw_op_wrong_key_000000000000000000")
    at.button[0].click()
    at.run()
    assert "Sign-in refused" in at.error[0].value


def test_demo_login_link_signs_in_once(seeded_db: SeededDb, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.login import login_token

    monkeypatch.setenv("MIDWATCH_DASHBOARD_DEMO_KEY", seeded_db.operator_key)
    token = login_token(seeded_db.operator_key)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["login"] = token
    at.run()
    assert not at.exception
    assert at.title[0].value == "Overview"
    again = AppTest.from_file(APP, default_timeout=60)
    again.query_params["login"] = token
    again.run()
    assert "already used" in again.warning[0].value


def test_overview_shows_success_rates_live_counts_and_latest_failures(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    assert at.title[0].value == "Overview"
    ok24, decided24 = _expected_success(24)
    ok7, decided7 = _expected_success(24 * 7)
    assert _metric(at, "Success 24 h") == f"{ok24 / decided24 * 100:.1f}%"
    assert _metric(at, "Success 7 d") == f"{ok7 / decided7 * 100:.1f}%"
    from tenants.kit.db import read_only
    from tenants.runs.models import Run

    with read_only() as s:
        escalated = s.scalar(select(func.count()).select_from(Run).where(Run.state == "escalated"))
        waiting = s.scalar(select(func.count()).select_from(Run).where(Run.state == "waiting_approval"))
    assert _metric(at, "Escalated") == str(escalated)
    assert _metric(at, "Waiting approval") == str(waiting)
    failures = _frames(at)[1]
    facts = failures[failures["tenant"] == "facts"]
    assert set(facts["category"]) == {"dependency", "auth"}
    assert "401 Unauthorized; OAuth refresh failed" in " ".join(facts["reason"])
    spend = _frames(at)[0]
    assert spend[spend["tenant"] == "facts"]["spend 24 h"].item() == "$0.10"


def test_reliability_shows_measured_projected_and_slo_for_the_facts_agent(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/reliability.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="rel_tenant").select("facts").run()
    table = _frames(at)[0]
    row = table[table["agent"] == "facts-agent"].iloc[0]
    assert row["measured"] == "70.0%"
    assert row["SLO"] == "90.0%"
    assert row["status"] == "BELOW SLO"
    assert row["failed"] == 3
    # fetch failed 3 of 10, draft and send succeeded 7 of 7: projection = 0.7 * 1 * 1
    assert row["projected"] == "70.0%"
    assert _metric(at, "Measured end-to-end") == "70.0%"
    steps = _frames(at)[1]
    assert list(steps["step"]) == ["fetch", "draft", "send"]
    assert list(steps["success"]) == ["70.00%", "100.00%", "100.00%"]
    assert _metric(at, "MTTR").endswith(("s", "min"))  # failures were each followed by a success


def test_runs_page_finds_a_run_and_shows_its_timeline(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/runs.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="runs_tenant").select("facts").run()
    at.selectbox(key="runs_state").select("failed").run()
    results = _frames(at)[0]
    assert len(results) == 3
    # a seeded run with a full timeline: the newest succeeded run of a seeded tenant
    at.selectbox(key="runs_tenant").select("acme").run()
    at.selectbox(key="runs_state").select("succeeded").run()
    assert not at.exception, at.exception
    assert any("hash chain intact" in s.value for s in at.success)
    events = _frames(at)[1]  # results, then the run's timeline tab
    assert events["kind"].iloc[0] == "run.started"
    assert events["kind"].iloc[-1] == "run.succeeded"
    assert {"considered", "chose", "why"} <= set(events.columns)
    assert _metric(at, "State") == "succeeded"


def test_approvals_page_lists_escalated_runs_and_says_approvals_are_not_configured(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/approvals.py").run()
    assert not at.exception, at.exception
    from tenants.kit.db import read_only
    from tenants.runs.models import Run

    with read_only() as s:
        escalated = s.scalar(select(func.count()).select_from(Run).where(Run.state == "escalated"))
    assert _metric(at, "Escalated runs") == str(escalated)
    assert any("not configured yet" in i.value for i in at.info)


def test_security_page_scores_every_tenant_with_reasons(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/security.py").run()
    assert not at.exception, at.exception
    table = _frames(at)[0]
    assert len(table) == 6
    assert set(table["tenant"]) >= {"facts"}
    assert all(0 <= s <= 100 for s in table["score"])
    assert all(r for r in table["reasons"])
    assert _metric(at, "Broken chains") == "0"
    assert any("not configured yet" in i.value for i in at.info)


def test_tenants_page_shows_the_facts_tenant_at_70_percent(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/tenants.py").run()
    assert not at.exception, at.exception
    table = _frames(at)[0]
    row = table[table["tenant"] == "facts"].iloc[0]
    assert row["success 7 d"] == "70.0%"
    assert row["runs 24 h"] == 10
    assert row["spend 24 h"] == "$0.10"
    assert _metric(at, "Tenants") == "6"
