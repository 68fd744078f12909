"""Every page, rendered with AppTest against the seeded database: the figures shown are the seeded facts."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
import streamlit as st
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP, SeededDb, frames, metric, nearest_rank, shown_close, signed_in

_frames, _metric = frames, metric


def _signed_in(db: SeededDb) -> AppTest:
    return signed_in(db.operator_key)


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
    _queues, spend, _burn, failures = _frames(at)
    facts = failures[failures["tenant"] == "facts"]
    assert set(facts["category"]) == {"dependency", "auth"}
    assert "401 Unauthorized; OAuth refresh failed" in " ".join(facts["reason"])
    assert spend[spend["tenant"] == "facts"]["spend 24 h"].item() == "$0.10"


def test_overview_shows_budget_burn_per_tenant_and_pending_approvals(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    from tenants.approvals.models import Approval
    from tenants.kit.db import read_only

    with read_only() as s:
        pending = s.scalar(select(func.count()).select_from(Approval).where(Approval.state == "pending"))
    assert pending and pending >= 3  # the seed's two waiting runs, and the facts tenant's
    assert _metric(at, "Pending approvals") == str(pending)
    burn = _frames(at)[2]
    facts = burn[burn["tenant"] == "facts"].iloc[0]
    assert facts["money"] == "$8.00 of $10.00 / day (80%)"
    assert facts["tokens"] == "0 of 1,000 / day (0%)"  # 200 reserved, none used yet
    assert facts["LLM calls"] == "no limit"
    assert facts["peak"] == 80.0
    assert len(burn) == 6  # every seeded tenant has limits
    assert any("at 80 % or more of a budget" in w.value and "facts (money 80%)" in w.value for w in at.warning)


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


def test_approvals_page_shows_the_queue_with_route_and_expiry_and_escalated_items(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/approvals.py").run()
    assert not at.exception, at.exception
    from tenants.approvals.models import Approval
    from tenants.kit.db import read_only
    from tenants.runs.models import Run, RunItem

    with read_only() as s:
        escalated = s.scalar(select(func.count()).select_from(Run).where(Run.state == "escalated"))
        items = s.scalar(select(func.count()).select_from(RunItem).join(Run, Run.id == RunItem.run_id)
                         .where(Run.state == "escalated", RunItem.state == "escalated"))
        pending = s.scalar(select(func.count()).select_from(Approval).where(Approval.state == "pending"))
    assert _metric(at, "Escalated runs") == str(escalated)
    assert _metric(at, "Pending approvals") == str(pending)
    assert _metric(at, "Next expiry").endswith("left")
    queue = _frames(at)[0]
    assert len(queue) == pending
    facts = queue[queue["tenant"] == "facts"].iloc[0]
    assert facts["route"] == "approver"
    assert facts["action"] == "payments.refund"
    assert facts["agent"] == "facts-agent"
    assert facts["expires"].endswith("min left") and 25 <= float(facts["expires"].split()[0]) <= 30
    assert facts["age"].endswith("min ago")
    esc_items = _frames(at)[1]
    assert len(esc_items) == items and items > 0
    assert all(esc_items["reason"])
    decided = _frames(at)[-1]
    outcomes = dict(zip(decided["tenant"] + "/" + decided["outcome"], decided["by"], strict=False))
    assert outcomes["facts/rejected"] == "key_facts_approver"
    assert {"approved", "rejected", "expired"} <= set(decided["outcome"])
    assert not any("not configured" in i.value for i in at.info)


def test_security_page_scores_every_tenant_with_reasons(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/security.py").run()
    assert not at.exception, at.exception
    table = _frames(at)[0]
    assert len(table) == 6
    assert set(table["tenant"]) >= {"facts"}
    assert all(0 <= s <= 100 for s in table["score"])
    assert all(r for r in table["reasons"])
    assert _metric(at, "Run logs broken") == "0"
    assert not any("not configured" in i.value for i in at.info)
    facts = table[table["tenant"] == "facts"].iloc[0]
    reasons = facts["reasons"]
    assert "audit chain broken at seq 2" in reasons
    assert "1 secret overdue for rotation: legacy_token (200 d, max 90 d)" in reasons
    assert "3 blocked egress attempts in 7 days" in reasons  # the fourth is 10 days old
    assert facts["score"] == 100 - 40 - 10 - 15
    assert facts["overdue"] == 1
    assert facts["blocked 7 d"] == "3 egress"
    assert facts["audit chain"].startswith("BROKEN at seq 2")
    assert _metric(at, "Audit broken") == "1"
    assert any("facts" in e.value and "Audit chain verification failed" in e.value for e in at.error)


def test_security_page_shows_a_tenants_secrets_violations_and_audit_chain(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/security.py").run()
    at.selectbox(key="sec_tenant").select("facts").run()
    assert not at.exception, at.exception
    assert any(s.value == "facts: 35/100" for s in at.subheader)
    assert any("Audit chain BROKEN at seq 2" in e.value for e in at.error)
    frames = _frames(at)
    secrets = frames[1].set_index("secret")
    assert secrets.loc["legacy_token", "status"] == "OVERDUE (200 d > 90 d)"
    assert secrets.loc["fresh_token", "status"] == "rotation pending (v2 not promoted)"
    assert secrets.loc["fresh_token", "pending"] == "v2"
    shown = " ".join(str(v) for f in frames for v in f.to_numpy().ravel())
    assert "facts-legacy-value" not in shown and "facts-fresh-value" not in shown  # metadata only
    violations = frames[2]
    assert len(violations) == 4  # the latest few, the old one included
    assert set(violations["kind"]) == {"egress"}
    assert set(violations["target"]) == {"exfil.example.net"}


def test_tenants_page_shows_the_facts_tenant_at_70_percent(seeded_db: SeededDb) -> None:
    at = _signed_in(seeded_db)
    at.switch_page("views/tenants.py").run()
    assert not at.exception, at.exception
    table = _frames(at)[0]
    row = table[table["tenant"] == "facts"].iloc[0]
    assert row["success 7 d"] == "70.0%"
    assert row["runs 24 h"] == 10
    assert row["spend 24 h"] == "$0.10"
    assert row["limits"] == 2
    assert row["budget peak"] == 80.0
    assert row["reservations"] == 1
    from tenants.budgets.models import BudgetReservation
    from tenants.kit.db import read_only

    with read_only() as s:
        open_ids = s.execute(select(BudgetReservation.tenant_id, BudgetReservation.id)
                             .where(BudgetReservation.state == "reserved").distinct()).all()
    assert _metric(at, "Open reservations") == str(len(open_ids))
    assert _metric(at, "Tenants") == "6"
    budgets = _frames(at)[1]
    money = budgets[(budgets["tenant"] == "facts") & (budgets["metric"] == "money")].iloc[0]
    assert (money["limit"], money["used"], money["reserved"], money["used %"]) == ("$10.00", "$8.00", "$0.00", "80%")
    assert money["remaining"] == "$2.00"
    assert money["period"] == "day"
    tokens = budgets[(budgets["tenant"] == "facts") & (budgets["metric"] == "tokens")].iloc[0]
    assert (tokens["limit"], tokens["used"], tokens["reserved"], tokens["committed"]) == ("1,000", "0", "200", 20.0)
    reservations, events = _frames(at)[2], _frames(at)[3]
    held = reservations[reservations["tenant"] == "facts"].iloc[0]
    assert (held["metric"], held["held"]) == ("tokens", "200")
    assert held["expires"].endswith("min left")
    facts_events = events[events["tenant"] == "facts"]
    assert sorted(facts_events["threshold"]) == ["50%", "80%"]
    assert set(facts_events["at"]) == {"$8.00 of $10.00"}
    assert len(events) > len(facts_events)  # the seeded tenants crossed thresholds too


def _due_runs(now: datetime) -> dict[str, tuple[int, float]]:
    """Per tenant name: due runnable runs and the oldest one's wait, straight from the runs table."""
    from tenants.accounts.models import Tenant
    from tenants.kit.db import read_only
    from tenants.runs.models import Run

    with read_only() as s:
        rows = s.execute(select(Tenant.name, func.count(), func.min(Run.runnable_at))
                         .join(Tenant, Tenant.id == Run.tenant_id)
                         .where(Run.runnable_at.is_not(None), Run.runnable_at <= now).group_by(Tenant.name)).all()
    return {str(name): (int(n), (now - oldest).total_seconds()) for name, n, oldest in rows}


def _start_waits(window_start: datetime) -> dict[str, list[float]]:
    """Per tenant name: started_at - created_at of the runs that first started from ``window_start`` on."""
    from tenants.accounts.models import Tenant
    from tenants.kit.db import read_only
    from tenants.runs.models import Run

    with read_only() as s:
        rows = s.execute(select(Tenant.name, Run.created_at, Run.started_at).join(Tenant, Tenant.id == Run.tenant_id)
                         .where(Run.started_at >= window_start)).all()
    out: dict[str, list[float]] = {}
    for name, created, started in rows:
        out.setdefault(str(name), []).append((started - created).total_seconds())
    return out


def _time_to_start_matches(row: pd.Series, before: datetime, after: datetime) -> bool:
    """The row's started count and p50 / p95 equal the runs table's over the window the page used (it rendered
    between ``before`` and ``after``: a minute may have turned in between, so either window will do)."""
    for moment in {before.replace(second=0, microsecond=0), after.replace(second=0, microsecond=0)}:
        waits = _start_waits(moment - timedelta(minutes=59)).get(str(row["tenant"]), [])
        if row["started 60 min"] != len(waits):
            continue
        if not waits and row["time-to-start p50"] == row["time-to-start p95"] == "—":
            return True
        if waits and all(shown_close(row[c], nearest_rank(waits, q), rel=0.05)
                         for c, q in (("time-to-start p50", 0.5), ("time-to-start p95", 0.95))):
            return True
    return False


def _seeded_profiles() -> dict[str, str]:
    """The seed's queue profile of each seeded tenant (the facts tenant was added after)."""
    from dashboard.seed import queue_profile
    from tenants.accounts.models import Tenant
    from tenants.kit.db import read_only

    with read_only() as s:
        tenants = s.execute(select(Tenant.id, Tenant.name).where(Tenant.name != "facts").order_by(Tenant.id)).all()
    return {str(name): queue_profile(i) for i, (_, name) in enumerate(tenants)}


def test_overview_queues_equal_a_recount_of_the_runs_table(seeded_db: SeededDb) -> None:
    from tenants.kit.ids import utcnow
    from tenants.reliability.queues import QUEUE_ALERT_AFTER_S

    st.cache_data.clear()  # figures read now, not by an earlier test
    before = utcnow()
    at = _signed_in(seeded_db)
    after = utcnow()
    slack = (after - before).total_seconds() + 1
    queues = _frames(at)[0]
    due = _due_runs(after)
    assert set(queues["tenant"]) == set(due) and len(due) >= 3
    for _, row in queues.iterrows():
        count, oldest = due[row["tenant"]]
        assert row["waiting"] + row["at cap"] == count, row
        assert shown_close(row["oldest waiting"], oldest, slack_s=slack), (row["tenant"], row["oldest waiting"], oldest)
        assert row["status"].startswith("WAITING > 5.0 min") == (oldest > QUEUE_ALERT_AFTER_S), row
        assert _time_to_start_matches(row, before, after), row
    ages = [due[t][1] for t in queues["tenant"]]
    assert ages == sorted(ages, reverse=True)  # the longest wait first
    assert _metric(at, "Queued") == str(sum(n for n, _ in due.values()))
    profiles = _seeded_profiles()
    capped = queues[queues["tenant"].map(profiles) == "capped"].iloc[0]
    running, cap = capped["running / cap"].split(" / ")
    assert capped["waiting"] == 0 and capped["at cap"] == 3 and running == cap and int(cap) >= 2
    flood = [t for t, p in profiles.items() if p == "flood"]
    assert any(f"{flood[0]} (" in w.value and "waiting longer than 5.0 min" in w.value for w in at.warning)


def test_tenants_page_queue_columns_equal_a_recount_of_the_runs_table(seeded_db: SeededDb) -> None:
    from tenants.kit.ids import utcnow

    st.cache_data.clear()  # figures read now, not by an earlier test
    before = utcnow()
    at = _signed_in(seeded_db)
    at.switch_page("views/tenants.py").run()
    after = utcnow()
    assert not at.exception, at.exception
    table = _frames(at)[0]
    due = _due_runs(after)
    for _, row in table.iterrows():
        count, oldest = due.get(row["tenant"], (0, None))
        assert row["waiting"] + row["at cap"] == count, row
        if oldest is None:
            assert row["oldest waiting"] == "—"
        else:
            assert shown_close(row["oldest waiting"], oldest, slack_s=(after - before).total_seconds() + 1), row
        assert _time_to_start_matches(row, before, after), row
    assert table["started 60 min"].sum() > 0
