"""Reserve before spending, reconcile after, release on failure: exact, idempotent, all or nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from tenants.budgets.models import BudgetReservation
from tenants.budgets.service import (
    charge_run,
    check_priced,
    overview,
    reconcile,
    release,
    release_expired,
    reserve_many,
)
from tenants.kit.db import unit_of_work
from tenants.kit.errors import BudgetExhausted, IdempotencyConflict, InvalidInput, NotFound
from tests.conftest import Harness
from tests.tenants.budgets.conftest import at, d, ledgers, limit, one_ledger, set_budget

NOW = at("2026-06-15T12:00:00+00:00")


def _reserve(tenant_id: str, amounts: dict[str, str | int], rid: str, agent: str = "bot", **kw: object) -> object:
    with unit_of_work() as session:
        return reserve_many(session, tenant_id, agent, amounts, rid, now=NOW, **kw)  # type: ignore[arg-type]


def _lines(tenant_id: str, rid: str) -> list[BudgetReservation]:
    with unit_of_work() as session:
        return list(session.scalars(select(BudgetReservation).where(
            BudgetReservation.tenant_id == tenant_id, BudgetReservation.id == rid)).all())


def test_decimal_money_is_exact_so_point_one_plus_point_two_fills_a_limit_of_point_three(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "0.3"))
    _reserve(tenant.id, {"cost_usd": "0.1"}, "a")
    _reserve(tenant.id, {"cost_usd": "0.2"}, "b")
    ledger = one_ledger(tenant.id, "cost_usd")
    assert ledger.used + ledger.reserved == Decimal("0.3") == ledger.limit
    with pytest.raises(BudgetExhausted):
        _reserve(tenant.id, {"cost_usd": "0.00000001"}, "c")
    with unit_of_work() as session:
        reconcile(session, tenant.id, "a", Decimal("0.1"), now=NOW)
        reconcile(session, tenant.id, "b", "0.2", now=NOW)
    assert one_ledger(tenant.id, "cost_usd").used == Decimal("0.3")


def test_floats_are_refused_and_sub_cent_prices_round_up_never_down(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "1"))
    with pytest.raises(InvalidInput, match="not float"):
        _reserve(tenant.id, {"cost_usd": 0.1}, "f")  # type: ignore[dict-item]
    res = _reserve(tenant.id, {"cost_usd": "0.000000001"}, "tiny")
    assert res.amounts == {"cost_usd": d("0.00000001")}  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="whole number"):
        _reserve(tenant.id, {"tokens": "1.5"}, "t")


def test_exhaustion_names_the_metric_limit_use_and_period(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "1.00", timezone="Europe/Berlin"))
    _reserve(tenant.id, {"cost_usd": "0.75"}, "first")
    with pytest.raises(BudgetExhausted) as caught:
        _reserve(tenant.id, {"cost_usd": "0.50"}, "second")
    text = str(caught.value)
    assert "cost_usd budget exhausted for the tenant" in text
    assert "limit 1 per day" in text and "Europe/Berlin" in text and "2026-06-15T00:00:00+02:00" in text
    assert "reserved 0.75" in text and "requested 0.5" in text and "used 0" in text
    assert caught.value.extra["reason"] == "limit_reached" and caught.value.extra["limit"] == "1"
    assert _lines(tenant.id, "second") == []


def test_reserve_many_is_all_or_nothing_even_if_the_caller_catches_and_commits(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "1.00"), limit("llm_calls", 1))
    _reserve(tenant.id, {"cost_usd": "0.20", "llm_calls": 1}, "ok")
    # cost_usd is held first, then llm_calls fails; the caller catches the error and commits
    with unit_of_work() as session, pytest.raises(BudgetExhausted, match="llm_calls"):
        reserve_many(session, tenant.id, "bot", {"cost_usd": "0.20", "llm_calls": 1}, "too-many", now=NOW)
    assert one_ledger(tenant.id, "cost_usd").reserved == d("0.20")
    assert one_ledger(tenant.id, "llm_calls").reserved == 1
    assert _lines(tenant.id, "too-many") == []


def test_a_repeated_reservation_id_holds_nothing_more_and_other_amounts_conflict(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("tokens", 1000))
    first = _reserve(tenant.id, {"tokens": 400}, "step-1")
    again = _reserve(tenant.id, {"tokens": 400}, "step-1")
    assert not first.replayed and again.replayed  # type: ignore[attr-defined]
    assert one_ledger(tenant.id, "tokens").reserved == 400
    with pytest.raises(IdempotencyConflict):
        _reserve(tenant.id, {"tokens": 500}, "step-1")


def test_reconcile_moves_reserved_to_actual_once_and_release_after_it_does_nothing(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "1.00"), limit("llm_calls", 10))
    _reserve(tenant.id, {"cost_usd": "0.50", "llm_calls": 1}, "call")
    with unit_of_work() as session:
        settled = reconcile(session, tenant.id, "call", {"cost_usd": "0.12", "llm_calls": 1}, now=NOW)
        again = reconcile(session, tenant.id, "call", {"cost_usd": "0.12", "llm_calls": 1}, now=NOW)
        late_release = release(session, tenant.id, "call", now=NOW)
    assert settled.state == "settled" and settled.charged == {"cost_usd": d("0.12"), "llm_calls": 1}
    assert again.state == "noop" and late_release.state == "noop"
    money = one_ledger(tenant.id, "cost_usd")
    assert (money.used, money.reserved, money.overspend) == (d("0.12"), 0, 0)
    assert [(r.state, r.actual) for r in _lines(tenant.id, "call")] == [("settled", d("0.12")), ("settled", 1)]


def test_release_gives_the_room_back_once(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("llm_calls", 2))
    _reserve(tenant.id, {"llm_calls": 2}, "failed-call")
    with unit_of_work() as session:
        assert release(session, tenant.id, "failed-call", now=NOW).state == "released"
        assert release(session, tenant.id, "failed-call", now=NOW).state == "noop"
        assert reconcile(session, tenant.id, "failed-call", 2, now=NOW).state == "noop"
    ledger = one_ledger(tenant.id, "llm_calls")
    assert (ledger.used, ledger.reserved) == (0, 0)
    _reserve(tenant.id, {"llm_calls": 2}, "next-call")  # the room is there again


def test_a_call_costing_more_than_reserved_is_charged_and_the_excess_recorded_as_overspend(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "1.00"))
    _reserve(tenant.id, {"cost_usd": "0.90"}, "pricey")
    with unit_of_work() as session:
        settled = reconcile(session, tenant.id, "pricey", "1.25", now=NOW)
        with pytest.raises(InvalidInput):
            reconcile(session, tenant.id, "pricey", "-1", now=NOW)
        with pytest.raises(NotFound):
            reconcile(session, tenant.id, "nope", "1", now=NOW)
    assert settled.overspend == {"cost_usd": d("0.35")}
    ledger = one_ledger(tenant.id, "cost_usd")
    assert (ledger.used, ledger.reserved, ledger.overspend) == (d("1.25"), 0, d("0.35"))
    with unit_of_work() as session:
        (usage,) = overview(session, tenant.id, now=NOW)
    assert (usage.used, usage.remaining, usage.overspend) == (d("1.25"), 0, d("0.35"))  # room clamped at 0
    with pytest.raises(BudgetExhausted):
        _reserve(tenant.id, {"cost_usd": "0.01"}, "after")


def test_expired_reservations_of_a_crashed_worker_are_released_by_the_scheduler(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", "1.00"))
    _reserve(tenant.id, {"cost_usd": "0.60"}, "crashed", ttl_s=60)
    with unit_of_work() as session:  # the database is shared with other tests: look at this tenant only
        release_expired(session, now=NOW + timedelta(seconds=30))
    assert [r.state for r in _lines(tenant.id, "crashed")] == ["reserved"]
    with unit_of_work() as session:
        assert release_expired(session, now=NOW + timedelta(seconds=61)).reservations >= 1
        assert release_expired(session, now=NOW + timedelta(seconds=62)).reservations == 0  # once only
    assert one_ledger(tenant.id, "cost_usd").reserved == 0
    assert [r.state for r in _lines(tenant.id, "crashed")] == ["expired"]
    # a worker that was only slow reconciles late: the money was spent, so it is charged
    with unit_of_work() as session:
        late = reconcile(session, tenant.id, "crashed", "0.40", now=NOW + timedelta(seconds=70))
    assert late.state == "settled" and late.overspend == {"cost_usd": d("0.40")}
    assert one_ledger(tenant.id, "cost_usd").used == d("0.40")


def test_an_unpriced_model_is_refused_when_a_money_budget_applies(db: Harness) -> None:
    tenant = db.onboard()
    with unit_of_work() as session:  # no money budget: any model may run
        check_priced(session, tenant.id, "bot", model="local-llm", price=None)
    set_budget(tenant.id, limit("cost_usd", "5", agent="bot"), limit("tokens", 1000))
    with unit_of_work() as session:
        check_priced(session, tenant.id, "other", model="local-llm", price=None)  # no money limit on it
        check_priced(session, tenant.id, "bot", model="careful", price=Decimal("0.000002"))
        with pytest.raises(BudgetExhausted, match="has no price") as caught:
            check_priced(session, tenant.id, "bot", model="local-llm", price=None)
    assert caught.value.extra["reason"] == "model_unpriced"


def test_agent_and_tenant_limits_both_apply(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("llm_calls", 1, agent="a"), limit("llm_calls", 3))
    _reserve(tenant.id, {"llm_calls": 1}, "a1", agent="a")
    with pytest.raises(BudgetExhausted, match="agent 'a'"):
        _reserve(tenant.id, {"llm_calls": 1}, "a2", agent="a")
    _reserve(tenant.id, {"llm_calls": 2}, "b1", agent="b")
    with pytest.raises(BudgetExhausted, match="for the tenant"):
        _reserve(tenant.id, {"llm_calls": 1}, "b2", agent="b")
    assert sorted((r.agent, r.reserved) for r in ledgers(tenant.id)) == [("*", 3), ("a", 1)]


def test_a_metric_without_a_limit_is_allowed_and_runs_are_counted_per_period(db: Harness) -> None:
    tenant = db.onboard()
    res = _reserve(tenant.id, {"tokens": 10**9}, "unlimited")
    assert res.budget_ids == {"tokens": []}  # type: ignore[attr-defined]
    set_budget(tenant.id, limit("runs", 2, period="month"))
    with unit_of_work() as session:
        charge_run(session, tenant.id, "bot", now=NOW)
        charge_run(session, tenant.id, "bot", now=NOW)
        with pytest.raises(BudgetExhausted, match="runs budget exhausted"):
            charge_run(session, tenant.id, "bot", now=NOW)
    assert one_ledger(tenant.id, "runs").used == 2
