"""Periods are calendar days/months in an explicit timezone, rolled over lazily; thresholds fire once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tenants.budgets.service import period_window, release, reserve, reserve_many
from tenants.kit.db import unit_of_work
from tenants.kit.errors import BudgetExhausted, InvalidInput
from tests.conftest import Harness
from tests.tenants.budgets.conftest import at, ledgers, limit, set_budget

AUCKLAND = "Pacific/Auckland"


def test_a_day_is_the_local_calendar_day_including_the_25_hour_dst_day() -> None:
    assert period_window("day", AUCKLAND, at("2026-03-10T10:59:59+00:00")) == (
        at("2026-03-09T11:00:00+00:00"), at("2026-03-10T11:00:00+00:00"))
    start, end = period_window("day", AUCKLAND, at("2026-04-05T06:00:00+00:00"))  # NZDT ends that night
    assert (start, end - start) == (at("2026-04-04T11:00:00+00:00"), timedelta(hours=25))
    assert period_window("month", AUCKLAND, at("2026-12-15T00:00:00+00:00")) == (
        at("2026-11-30T11:00:00+00:00"), at("2026-12-31T11:00:00+00:00"))
    assert period_window("month", "UTC", at("2026-12-31T23:59:59+00:00"))[1] == at("2027-01-01T00:00:00+00:00")
    with pytest.raises(InvalidInput, match="timezone"):
        period_window("day", "Mars/Olympus_Mons", at("2026-01-01T00:00:00+00:00"))


def test_the_next_local_day_gets_a_fresh_budget_row_at_auckland_midnight(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "1.00", timezone=AUCKLAND))
    before_midnight = at("2026-03-10T10:59:00+00:00")  # 23:59 on 10 March in Auckland
    after_midnight = at("2026-03-10T11:00:00+00:00")  # 00:00 on 11 March there; still 10 March in UTC
    with unit_of_work() as session:
        reserve(session, tenant.id, "bot", "cost_usd", "1.00", "late", now=before_midnight)
        with pytest.raises(BudgetExhausted):
            reserve(session, tenant.id, "bot", "cost_usd", "0.01", "too-late", now=before_midnight)
    with unit_of_work() as session:
        reserve(session, tenant.id, "bot", "cost_usd", "1.00", "new-day", now=after_midnight)
    rows = ledgers(tenant.id, "cost_usd")
    assert [(r.period_start, r.reserved) for r in rows] == [
        (at("2026-03-09T11:00:00+00:00"), 1), (at("2026-03-10T11:00:00+00:00"), 1)]
    assert {r.timezone for r in rows} == {AUCKLAND}


def test_day_and_month_limits_on_one_metric_both_hold(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("llm_calls", 2, period="day"), limit("llm_calls", 3, period="month"))
    day1, day2 = at("2026-05-01T09:00:00+00:00"), at("2026-05-02T09:00:00+00:00")
    with unit_of_work() as session:
        reserve(session, tenant.id, "bot", "llm_calls", 2, "d1", now=day1)
        reserve(session, tenant.id, "bot", "llm_calls", 1, "d2a", now=day2)
        with pytest.raises(BudgetExhausted, match="per month"):
            reserve(session, tenant.id, "bot", "llm_calls", 1, "d2b", now=day2)


def test_thresholds_at_50_80_and_100_percent_are_recorded_once_per_period(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("llm_calls", 10))
    now = at("2026-07-01T12:00:00+00:00")

    def crossed(amount: int, rid: str) -> list[int]:
        with unit_of_work() as session:
            return [e.threshold for e in reserve(session, tenant.id, "bot", "llm_calls", amount, rid, now=now).events]

    assert crossed(4, "r1") == []
    assert crossed(1, "r2") == [50]
    assert crossed(3, "r3") == [80]
    with unit_of_work() as session:
        release(session, tenant.id, "r3", now=now)
    assert crossed(3, "r4") == []  # 80 % again: already recorded this period
    assert crossed(2, "r5") == [100]
    assert crossed(0, "r6") == []
    # a new period starts counting again, and one jump can cross several thresholds
    with unit_of_work() as session:
        events = reserve_many(session, tenant.id, "bot", {"llm_calls": 10}, "next-day",
                              now=now + timedelta(days=1)).events
    assert [e.threshold for e in events] == [50, 80, 100]
    listed = db.client.get("/v1/budgets/events", headers=tenant.headers).json()["data"]
    assert [e["threshold"] for e in listed] == [100, 80, 50, 100, 80, 50]
    assert listed[0]["limit"] == "10" and listed[0]["committed"] == "10"
