"""Queues on the Overview and Tenants pages, and every page honest about how current its figures are.

Against the queue facts (``queue_db``, see :func:`tests.dashboard.conftest._queue_facts`): the figures shown
are the facts as written (ages, counts, caps) and the nearest-rank percentiles of the waits the test wrote,
computed here. Then the deriver stops: events written and not derived raise the stale banner, deriving
clears it; a deriver that has not run for 10 minutes raises it too.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import (
    ALPHA_LONG,
    ALPHA_QUEUED_S,
    ALPHA_WAITS_S,
    BETA_QUEUED_S,
    BETA_WAITS_S,
    CALM_WAITS_S,
    GAMMA_SLOW_S,
    QueueDb,
    frames,
    metric,
    nearest_rank,
    seconds,
    shown_close,
    signed_in,
)

STALE = "Derived figures are stale"


def _elapsed(db: QueueDb) -> float:
    """Seconds since the facts were written: every wait has grown by this much."""
    from tenants.kit.ids import utcnow

    return (utcnow() - db.now).total_seconds()


def _row(table: pd.DataFrame, tenant: str) -> pd.Series:
    rows = table[table["tenant"] == tenant]
    assert len(rows) == 1, f"{tenant}: {len(rows)} rows in {list(table['tenant'])}"
    return rows.iloc[0]


def _assert_time_to_start(row: pd.Series, waits: list[float]) -> None:
    """p50 / p95 within 5 % of the exact nearest-rank figures of ``waits`` (and the print's rounding)."""
    assert row["started 60 min"] == len(waits)
    for column, q in (("time-to-start p50", 0.5), ("time-to-start p95", 0.95)):
        exact = nearest_rank(waits, q)
        assert shown_close(row[column], exact, rel=0.05), (column, row[column], exact)


ALPHA_STARTS = [float(w) for w in ALPHA_WAITS_S] + [float(ALPHA_LONG[0] - ALPHA_LONG[1])]  # the old one is out


def test_overview_lists_tenants_with_work_waiting_longest_first_and_flags_the_late_one(queue_db: QueueDb) -> None:
    at = signed_in(queue_db.operator_key)
    assert not at.exception, at.exception
    slack = _elapsed(queue_db) + 2
    queues = frames(at)[0]
    assert list(queues["tenant"]) == ["alpha", "beta", "gamma"]  # calm and idle have nothing waiting
    alpha, beta, gamma = (_row(queues, t) for t in ("alpha", "beta", "gamma"))
    # alpha: 6 due runs (the one due in 10 minutes is not), no cap, the oldest submitted 12 minutes ago
    assert (alpha["waiting"], alpha["at cap"], alpha["running / cap"]) == (len(ALPHA_QUEUED_S), 0, "0 / no cap")
    assert shown_close(alpha["oldest waiting"], max(ALPHA_QUEUED_S), slack_s=slack), alpha["oldest waiting"]
    assert alpha["status"] == "WAITING > 5.0 min"
    _assert_time_to_start(alpha, ALPHA_STARTS)
    # beta: a worker holds its one slot (the oldest run), so the two others are held at the cap
    assert (beta["waiting"], beta["at cap"], beta["running / cap"]) == (0, len(BETA_QUEUED_S) - 1, "1 / 1")
    assert shown_close(beta["oldest waiting"], sorted(BETA_QUEUED_S)[-2], slack_s=slack)
    assert beta["status"] == "ok, at cap"
    _assert_time_to_start(beta, list(BETA_WAITS_S))
    # gamma: agent "slow" is at its own cap (one held), agent "fast" waits for a worker
    assert (gamma["waiting"], gamma["at cap"]) == (1, 1)
    assert shown_close(gamma["oldest waiting"], min(GAMMA_SLOW_S), slack_s=slack)
    assert gamma["status"] == "ok, partly at cap"
    assert gamma["started 60 min"] == 0 and gamma["time-to-start p50"] == "—"
    assert metric(at, "Queued") == str(6 + 2 + 2)
    late = [w.value for w in at.warning if "waiting longer than 5.0 min" in w.value]
    assert len(late) == 1 and late[0].startswith("1 tenant(s)") and "alpha (12." in late[0], late
    assert not any("beta" in w or "gamma" in w for w in late)


def test_tenants_page_shows_each_tenants_queue_and_time_to_start(queue_db: QueueDb) -> None:
    at = signed_in(queue_db.operator_key)
    at.switch_page("views/tenants.py").run()
    assert not at.exception, at.exception
    slack = _elapsed(queue_db) + 2
    table = frames(at)[0]
    assert {"waiting", "at cap", "oldest waiting", "time-to-start p50", "time-to-start p95"} <= set(table.columns)
    alpha = _row(table, "alpha")
    assert (alpha["waiting"], alpha["at cap"]) == (len(ALPHA_QUEUED_S), 0)
    assert shown_close(alpha["oldest waiting"], max(ALPHA_QUEUED_S), slack_s=slack)
    _assert_time_to_start(alpha, ALPHA_STARTS)
    beta = _row(table, "beta")
    assert (beta["waiting"], beta["at cap"]) == (0, 2)
    gamma = _row(table, "gamma")
    assert (gamma["waiting"], gamma["at cap"]) == (1, 1)
    assert shown_close(gamma["oldest waiting"], min(GAMMA_SLOW_S), slack_s=slack)  # older than fast's
    calm = _row(table, "calm")  # nothing waiting, quick starts
    assert (calm["waiting"], calm["at cap"], calm["oldest waiting"]) == (0, 0, "—")
    _assert_time_to_start(calm, list(CALM_WAITS_S))
    idle = _row(table, "idle")
    assert (idle["waiting"], idle["started 60 min"], idle["time-to-start p95"]) == (0, 0, "—")


def test_pages_say_which_figures_are_live_and_which_derived(queue_db: QueueDb) -> None:
    from tenants.reliability.derive import derive_all

    derive_all()  # a pass of the deriver, as the scheduler makes every second
    at = _render(queue_db)
    captions = " ".join(c.value for c in at.caption)
    assert "**Live** (running, stuck, waiting, queues" in captions
    assert ("**Derived** (success rates, runs per hour, spend, latest failures, time-to-start): decision log up to"
            in captions)
    assert "every event derived" in captions
    assert not any(STALE in w.value for w in at.warning)
    for page, says in (("views/approvals.py", "Live: every figure on this page is read from the database"),
                       ("views/runs.py", "Live: every run, item, checkpoint and decision shown here"),
                       ("views/security.py", "Live: every figure on this page is read from the database"),
                       ("views/reliability.py", "**Derived** (every figure on this page): decision log up to")):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert any(says in c.value for c in at.caption), (page, [c.value for c in at.caption])


def _render(db: QueueDb, page: str | None = None) -> AppTest:
    st.cache_data.clear()  # the pages cache reads for up to 60 s: look at the database now
    at = signed_in(db.operator_key)
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _banners(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if STALE in w.value]


def test_events_the_deriver_has_not_read_raise_the_stale_banner_until_derived(queue_db: QueueDb) -> None:
    from tenants.kit.db import unit_of_work
    from tenants.kit.ids import new_id, utcnow
    from tenants.reliability.derive import derive_all
    from tests.tenants.reliability.history import History, Step, write_history

    derive_all()  # a pass of the deriver, as the scheduler makes every second
    assert not _banners(_render(queue_db))
    # Given the deriver stopped 10 minutes ago: a run finished then, its events never derived
    at_ = utcnow() - timedelta(minutes=10)
    with unit_of_work() as session:
        write_history(session, queue_db.tenants["idle"], [
            History(new_id("run"), "succeeded", at_ - timedelta(seconds=3), at_, steps=[Step("fetch")])])
    for page in (None, "views/tenants.py", "views/reliability.py"):
        at = _render(queue_db, page)
        banners = _banners(at)
        assert len(banners) == 1, (page, banners)
        assert "10." in banners[0] and "min behind" in banners[0], banners[0]
        assert "3 decision event(s) written since are not derived yet" in banners[0], banners[0]
        assert "`midwatch scheduler`" in banners[0]
        assert any("3 newer event(s) not derived yet" in c.value for c in at.caption), page
        assert any("Read models 10." in w.value for w in at.sidebar.warning), page
    for page in ("views/approvals.py", "views/runs.py"):  # live pages: nothing on them is stale
        assert not _banners(_render(queue_db, page)), page
    # When the deriver catches up, the banner goes
    assert derive_all() == 3
    for page in (None, "views/tenants.py", "views/reliability.py"):
        at = _render(queue_db, page)
        assert not _banners(at), page
        assert any("every event derived" in c.value for c in at.caption), page
        assert not at.sidebar.warning, page


def test_a_deriver_that_stopped_running_raises_the_banner_even_with_nothing_new(queue_db: QueueDb) -> None:
    from tenants.kit.db import unit_of_work
    from tenants.kit.ids import utcnow
    from tenants.reliability.derive import derive_all, derive_once

    with unit_of_work() as session:  # its last pass, 10 minutes ago: nothing to derive since
        assert derive_once(session, now=utcnow() - timedelta(minutes=10)) == 0
    at = _render(queue_db)
    banners = _banners(at)
    assert len(banners) == 1 and "The read-model deriver last ran 10." in banners[0], banners
    assert "not derived yet" not in banners[0]
    derive_all()
    assert not _banners(_render(queue_db))


@pytest.mark.parametrize("shown, expected", [("12.3 s", 12.3), ("1.5 min", 90.0), ("2.0 h", 7200.0)])
def test_the_duration_reader_reads_what_the_pages_print(shown: str, expected: float) -> None:
    from dashboard.ui import duration

    assert seconds(shown) == pytest.approx(expected)
    assert seconds(duration(expected)) == pytest.approx(expected)
