"""The engine's prepared statements go straight through the driver (tenants.kit.db.execute_raw): they keep
SQLAlchemy's error contract, so a PostgreSQL restart is a retry and a broken connection is never reused."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from tenants.kit.db import RawStatement, Session, execute_raw, is_transient_db_error, pinned_session
from tests.conftest import PG_URL, Harness


@pytest.fixture
def pinned(make_harness: Callable[..., Harness]) -> Iterator[Session]:
    """The worker's kind of session on PostgreSQL: one connection, autocommit."""
    make_harness(db="postgres", worker=None)
    session = pinned_session()
    yield session
    session.close()
    if session.bind is not None and hasattr(session.bind, "close"):
        session.bind.close()


def test_named_parameters_become_numbered_once_each() -> None:
    statement = RawStatement.of("SELECT :a, CAST(:b AS JSONB), :a, x::text FROM t WHERE y = :b_c")
    assert statement.sql == b"SELECT $1, CAST($2 AS JSONB), $1, x::text FROM t WHERE y = $3"
    assert statement.names == ("a", "b", "b_c")


@pytest.mark.postgres
def test_a_row_comes_back_and_the_statement_joins_the_autocommit_connection(pinned: Session) -> None:
    pinned.execute(text("CREATE TEMP TABLE raw_probe (id int PRIMARY KEY, note text)"))
    insert = RawStatement.of("INSERT INTO raw_probe VALUES (:id, :note) RETURNING id, note")
    assert execute_raw(pinned, insert, {"id": 1, "note": "one", "unused": 2}) == (1, "one")
    # autocommit: the row is there without a commit, for this connection's later statements
    assert pinned.execute(text("SELECT count(*) FROM raw_probe")).scalar() == 1
    with pytest.raises(IntegrityError) as caught:  # a constraint is SQLAlchemy's error, and not transient
        execute_raw(pinned, insert, {"id": 1, "note": "again"})
    assert not is_transient_db_error(caught.value)
    assert "again" not in str(caught.value)  # parameters are hidden from the message


@pytest.mark.postgres
def test_a_connection_killed_under_the_statement_is_transient_and_invalidated(pinned: Session) -> None:
    pid = pinned.execute(text("SELECT pg_backend_pid()")).scalar()
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(OperationalError) as caught:
        execute_raw(pinned, RawStatement.of("SELECT :n"), {"n": 1})
    assert is_transient_db_error(caught.value)
    assert caught.value.connection_invalidated
    assert pinned.connection().invalidated
