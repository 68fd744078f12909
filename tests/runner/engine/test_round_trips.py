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
    """Every statement the process sends to PostgreSQL while the block runs, counted at the driver (psycopg's
    cursor): SQLAlchemy's statements and the journal's prepared ones alike, and the pure steps' writes the
    journal sends without waiting (``send_raw``, straight through libpq)."""
    import psycopg

    seen: list[str] = []
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def first_word(query: Any) -> str:
        text = query.decode() if isinstance(query, bytes) else str(query)
        return text.split(None, 1)[0].upper()

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(first_word(query))
        return execute(self, query, *args, **kwargs)

    def counted_many(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(first_word(query))
        return executemany(self, query, *args, **kwargs)

    def counted_send(session: Any, statement: Any, params: Any) -> Any:  # a pure step's write, sent unawaited
        seen.append(first_word(statement.sql))
        return send_raw(session, statement, params)

    from tenants.runs import journal

    send_raw = journal.send_raw
    psycopg.Cursor.execute = counted  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted_many  # type: ignore[method-assign]
    journal.send_raw = counted_send  # type: ignore[assignment]
    try:
        yield seen
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]
        journal.send_raw = send_raw  # type: ignore[assignment]


@pytest.mark.postgres
def test_a_five_step_run_costs_one_claim_and_one_statement_per_step(make_harness: Callable[..., Harness],
                                                                    own_pg_schema: str) -> None:
    from runner.actors import run_once
    from tenants.kit.settings import get_settings

    h = make_harness(db="postgres", worker=None, extra={"MIDWATCH_DATABASE_URL": own_pg_schema})
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
    # (";" is the pool's pre-ping when run_once checks its connection out: once per wake-up, not per run)
    writes = [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK", "SELECT", ";")]
    assert writes == ["WITH"] * 6, seen
    assert seen.count(";") <= 1, seen
    assert seen.count("SELECT") == 0, seen  # the lease keeper's renewals are UPDATEs; no reads at all
    assert "BEGIN" not in seen, seen  # every statement commits on its own: no lock is held across a round trip


@pytest.mark.postgres
def test_a_submit_costs_a_version_lookup_and_one_insert_without_a_budget(make_harness: Callable[..., Harness]
                                                                          ) -> None:
    h = make_harness(db="postgres", worker=None)
    tenant = h.onboard()
    h.put_agent(tenant, FIVE)
    h.submit(tenant, "five", {"input": None})  # the key is verified (and cached) and the spec parsed once
    with _statements() as seen:
        h.submit(tenant, "five", {"input": None})
    work = [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK", ";")]
    # the latest version (one SELECT) and the run with its item (one INSERT): no audit append, no budget
    # statement without a runs limit, no authentication query, no read-back of the run
    assert work == ["SELECT", "WITH"], seen
    assert seen.count(";") <= 1, seen  # the pool's pre-ping when the request checks its connection out
