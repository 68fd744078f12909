"""The budget_race: many workers reserving at once can never spend more than the limit."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from tenants.budgets.service import reserve
from tenants.kit.db import unit_of_work
from tenants.kit.errors import BudgetExhausted
from tests.conftest import Harness
from tests.tenants.budgets.conftest import limit, one_ledger, set_budget

WORKERS = 200
PRICE = Decimal("0.10")
ROOM = Decimal("5.00")  # exactly 50 reservations of 0.10


def race(tenant_id: str, workers: int = WORKERS) -> tuple[int, int, list[BaseException]]:
    """``workers`` threads, each in its own transaction, reserve PRICE at the same moment."""
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def one(i: int) -> bool:
        start.wait()
        try:
            with unit_of_work() as session:
                reserve(session, tenant_id, "racer", "cost_usd", PRICE, f"race-{i}")
            return True
        except BudgetExhausted:
            return False
        except BaseException as exc:
            errors.append(exc)
            raise

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(workers)))
    return sum(results), results.count(False), errors


def test_200_concurrent_reservations_against_room_for_50_grant_exactly_50(db: Harness) -> None:
    tenant = db.onboard()
    set_budget(tenant.id, limit("cost_usd", str(ROOM)))

    granted, refused, errors = race(tenant.id)

    assert errors == []
    assert (granted, refused) == (50, 150)
    ledger = one_ledger(tenant.id, "cost_usd")
    assert ledger.used + ledger.reserved == ledger.limit == ROOM
    assert ledger.reserved == PRICE * 50 and ledger.overspend == 0
    assert max(Decimal(0), ledger.used + ledger.reserved - ledger.limit) == 0
