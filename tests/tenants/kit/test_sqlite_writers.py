"""Embedded SQLite: units of work reuse pooled connections (opening one, with its WAL index and four
PRAGMAs, cost more than the unit of work it served), and concurrent writers still each commit once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text

from tenants.kit.db import get_engine, reset_engine, unit_of_work
from tests.conftest import Harness


def test_units_of_work_reuse_pooled_connections_and_concurrent_writers_lose_no_update(
        make_harness: Callable[..., Harness]) -> None:
    make_harness(worker=None)
    reset_engine()
    connects: list[int] = []
    event.listen(get_engine(), "connect", lambda _dbapi, _record: connects.append(1))
    with unit_of_work() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS probe (n INTEGER)"))
        session.execute(text("DELETE FROM probe"))
        session.execute(text("INSERT INTO probe VALUES (0)"))
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def writer() -> None:
        barrier.wait()
        for _ in range(25):
            try:
                with unit_of_work() as session:
                    n = session.execute(text("SELECT n FROM probe")).scalar_one()
                    session.execute(text("UPDATE probe SET n = :n"), {"n": n + 1})  # read-modify-write
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with unit_of_work() as session:
        final: Any = session.execute(text("SELECT n FROM probe")).scalar_one()
    assert errors == []
    assert final == 100  # BEGIN IMMEDIATE: each transaction saw the one before it
    assert len(connects) <= 4  # 102 units of work on at most one connection per thread, not one each
    reset_engine()
