"""The budget_race: many workers reserving at once can never spend more than the limit."""

from __future__ import annotations

from decimal import Decimal

from benchmarks.budget_race import reserve_at_once
from tests.conftest import Harness
from tests.tenants.budgets.conftest import limit, one_ledger, set_budget

WORKERS = 200
PRICE = Decimal("0.10")
ROOM = Decimal("5.00")  # exactly 50 reservations of 0.10


def test_200_concurrent_reservations_against_room_for_50_grant_exactly_50(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", str(ROOM)))

    granted, errors, _ = reserve_at_once(tenant.id, "racer", WORKERS, PRICE)

    assert errors == []
    assert (granted, WORKERS - granted) == (50, 150)
    ledger = one_ledger(tenant.id, "cost_usd")
    assert ledger.used + ledger.reserved == ledger.limit == ROOM
    assert ledger.reserved == PRICE * 50 and ledger.overspend == 0
    assert max(Decimal(0), ledger.used + ledger.reserved - ledger.limit) == 0
