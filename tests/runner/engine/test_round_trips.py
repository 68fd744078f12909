"""The hot path is designed by its budget of round trips: counted here at the database driver, so a change
that adds a statement per step, per run or per submit fails a test, not a benchmark run weeks later."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import Harness

FIVE = """\
apiVersion: midwatch/v1
name: five
scope: {tools: [sandbox.echo]}
steps:
""" + "".join(f"  - {{id: s{i}, tool: sandbox.echo, args: {{i: {i}}}}}\n" for i in range(5))


@contextmanager
def _statements() -> Iterator[list[str]]:
    """Every statement the process sends to the database while the block runs."""
    from sqlalchemy import event

    from tenants.kit.db import get_engine

    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


@pytest.mark.postgres
def test_a_five_step_run_costs_one_claim_and_one_statement_per_step(make_harness: Callable[..., Harness]) -> None:
    from runner.actors import run_once
    from tenants.kit.settings import get_settings

    h = make_harness(db="postgres", worker=None)
    tenant = h.onboard()
    h.put_agent(tenant, FIVE)
    warm = h.submit(tenant, "five", {"input": None})  # the first run loads the version once per process
    assert run_once(get_settings())
    assert h.run(tenant, warm["id"])["state"] == "succeeded"
    run = h.submit(tenant, "five", {"input": None})
    with _statements() as seen:
        assert run_once(get_settings())
    assert h.run(tenant, run["id"])["state"] == "succeeded"
    # the claim (one statement), then one statement per step: the run's start rides on the first step's write
    # and its end on the last one's; nothing else (no slot, no read model, no separate start or finish)
    writes = [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK", "SELECT")]
    assert len(writes) == 6, seen
    assert seen.count("SELECT") == 0, seen  # the lease keeper's renewals are UPDATEs; no reads at all


@pytest.mark.postgres
def test_a_submit_costs_a_version_lookup_and_one_insert_without_a_budget(make_harness: Callable[..., Harness]
                                                                          ) -> None:
    h = make_harness(db="postgres", worker=None)
    tenant = h.onboard()
    h.put_agent(tenant, FIVE)
    h.submit(tenant, "five", {"input": None})  # the key is verified (and cached) and the spec parsed once
    with _statements() as seen:
        h.submit(tenant, "five", {"input": None})
    work = [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK")]
    # the latest version (one SELECT) and the run with its item (one INSERT): no audit append, no budget
    # statement without a runs limit, no authentication query, no read-back of the run
    assert work == ["SELECT", "WITH"], seen
