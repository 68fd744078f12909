"""Embedded SQLite: a process's writers queue on an in-process lock handed over at commit, so they never
poll SQLite's write lock (whose busy handler sleeps up to 100 ms between tries); every way a transaction
can end gives the lock back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from tenants.kit.db import get_engine, reset_engine, session_factory, unit_of_work
from tests.conftest import Harness


@pytest.fixture
def no_busy_wait(make_harness: Callable[..., Harness]) -> Iterator[None]:
    """An embedded database whose connections fail at once on a held write lock (busy_timeout 0): any two
    of this process's write transactions that overlapped in SQLite would raise ``database is locked``."""
    make_harness(worker=None)
    reset_engine()
    engine = get_engine()

    @event.listens_for(engine, "connect")
    def _no_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    with unit_of_work() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS probe (n INTEGER)"))
        session.execute(text("DELETE FROM probe"))
        session.execute(text("INSERT INTO probe VALUES (0)"))
    yield
    reset_engine()


def _count() -> int:
    with unit_of_work() as session:
        return int(session.execute(text("SELECT n FROM probe")).scalar_one())


def _write_in_thread() -> list[BaseException]:
    """One write transaction on another thread; its errors (a thread still waiting after 5 s is one)."""
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with unit_of_work() as session:
                session.execute(text("UPDATE probe SET n = n + 1"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():
        errors.append(TimeoutError("the writer still waits for the lock"))
    return errors


@pytest.mark.usefixtures("no_busy_wait")
def test_concurrent_writers_of_one_process_take_turns_without_touching_sqlites_busy_handler() -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def writer() -> None:
        barrier.wait()
        for _ in range(40):
            try:
                with unit_of_work() as session:
                    n = session.execute(text("SELECT n FROM probe")).scalar_one()
                    session.execute(text("UPDATE probe SET n = :n"), {"n": n + 1})  # read-modify-write
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count() == 8 * 40  # no lost update: each transaction saw the one before it


@pytest.mark.usefixtures("no_busy_wait")
@pytest.mark.parametrize("ending", ["commit", "rollback", "error", "closed", "invalidated"])
def test_every_way_a_write_transaction_ends_hands_the_lock_on(ending: str) -> None:
    session = session_factory()()
    session.execute(text("UPDATE probe SET n = n + 100"))  # holds the write lock from here
    if ending == "commit":
        session.commit()
    elif ending == "rollback":
        session.rollback()
    elif ending == "error":
        with pytest.raises(Exception, match="no such table"):
            session.execute(text("UPDATE no_such_table SET n = 1"))
        session.rollback()
    elif ending == "invalidated":
        session.connection().invalidate()
    session.close()
    assert _write_in_thread() == []
    assert _count() == (101 if ending == "commit" else 1)
