"""Engine, sessions and the unit of work. The edge (route handler, actor) owns the transaction.

SQLite (embedded) runs in WAL mode on pooled connections and starts every write transaction with
``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of failing on lock upgrade.
PostgreSQL runs READ COMMITTED with a pre-ping pool.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.generators import fetch_many, send
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import QueuePool

from tenants.kit.settings import Settings, get_settings

__all__ = [
    "Base",
    "RawStatement",
    "Session",
    "begin_explicit",
    "call_after_commit",
    "commit_needed",
    "dispatch_after_commit",
    "enqueue_after_commit",
    "execute_raw",
    "get_engine",
    "insert_ignore",
    "is_postgresql",
    "is_transient_db_error",
    "pinned_session",
    "read_only",
    "relax_durability",
    "reset_engine",
    "session_factory",
    "set_dispatcher",
    "unit_of_work",
    "upsert",
    "with_db_retry",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every Midwatch table."""

    metadata = MetaData(naming_convention=NAMING)


READ_ONLY_OPTION = "midwatch_read_only"

_lock = threading.Lock()
_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None

T = TypeVar("T")
Dispatcher = Callable[[str, dict[str, Any], float], None]
_dispatcher: Dispatcher | None = None


def _build_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _private_sqlite_file(make_url(url).database)
        # Pooled: opening a connection (the WAL index, four PRAGMAs) cost more CPU than the unit of work it
        # served (embedded submits: 9 ms -> 4.4 ms of CPU each). Beyond the pool's size, connections are
        # opened and closed per use (no overflow limit: a burst of threads never waits for a connection).
        pooled: dict[str, Any] = {} if ":memory:" in url else {
            "poolclass": QueuePool, "pool_size": settings.worker_threads + 8, "max_overflow": -1}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pooled)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Readers (the dashboard) take no write lock: a deferred BEGIN never blocks a worker.
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    engine = create_engine(
        url,
        pool_size=max(5, settings.worker_threads + 2),
        max_overflow=20,
        pool_pre_ping=True,
        pool_recycle=1800,
    )

    @event.listens_for(engine, "connect")
    def _postgres_session_limits(dbapi_conn: Any, _record: Any) -> None:
        # A process paused inside a transaction (GC pause, SIGSTOP, partition) must not hold row locks
        # forever: PostgreSQL ends such sessions, so a new lease owner is never blocked for long.
        with dbapi_conn.cursor() as cur:
            cur.execute("SET idle_in_transaction_session_timeout = '15s'")
        dbapi_conn.commit()

    return engine


def _private_sqlite_file(database: str | None) -> None:
    """Create the SQLite file 0600 (it holds every tenant's data, like master.key); tighten an older, wider one.

    SQLite creates the -wal and -shm files with the database file's permissions, so they follow.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if candidate.exists() and candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)
    except OSError as exc:  # a read-only mount or another owner: SQLite reports what matters when it opens it
        from tenants.kit.logging import get_logger

        get_logger("db").warning("sqlite_file_permissions_unchanged", path=str(path), error=str(exc))


def get_engine() -> Engine:
    """The process's engine, built lazily from settings."""
    global _engine, _factory
    with _lock:
        if _engine is None:
            _engine = _build_engine(get_settings())
            _factory = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def session_factory() -> sessionmaker[Session]:
    """The process's session factory."""
    get_engine()
    assert _factory is not None
    return _factory


def reset_engine() -> None:
    """Dispose the engine (tests and the CLI use this after changing settings)."""
    global _engine, _factory
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None
        _factory = None


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """One transaction: commits on success, rolls back on any exception. Only edges call this."""
    session = session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def pinned_session() -> Session:
    """A session bound to one checked-out connection, kept across its commits (the engine's hot path:
    no pool checkout or pre-ping per transaction). Close the session, then ``session.bind.close()``.

    On PostgreSQL the connection is in autocommit mode: the engine's writes are single statements, each
    its own transaction, so a step is ONE round trip (no separate BEGIN and COMMIT). Work that needs
    several statements in one transaction opens it explicitly with :func:`begin_explicit`.
    """
    connection = get_engine().connect()
    if connection.dialect.name == "postgresql":
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
    return Session(bind=connection, expire_on_commit=False, join_transaction_mode="rollback_only")


def _autocommits(session: Session) -> bool:
    bind = session.get_bind()
    return isinstance(bind, Connection) and bind.get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def begin_explicit(session: Session) -> None:
    """Start a real transaction on a :func:`pinned_session` (PostgreSQL autocommit): the statements that
    follow commit (``session.commit()``) or roll back together. A no-op elsewhere."""
    if _autocommits(session):
        session.execute(text("BEGIN"))


def commit_needed(session: Session) -> bool:
    """Whether ``session.commit()`` after single statements would do anything: False on a
    :func:`pinned_session` in autocommit (each statement committed itself) with no message or callback waiting
    for the commit. Skipping the no-op commit saves a tenth of a step's CPU."""
    return not _autocommits(session) or bool(session.info.get("midwatch_outbox")
                                             or session.info.get("midwatch_after_commit"))


def upsert(on: Session | str, table: Any) -> Any:
    """``INSERT`` for the dialect of ``on`` (a session, or a dialect's name for a statement built once and
    reused across sessions), ready for ``.on_conflict_do_update(...)`` (PostgreSQL and SQLite spell the same
    upsert)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = on if isinstance(on, str) else on.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def insert_ignore(on: Session | str, table: Any, *conflict_columns: str, where: Any = None) -> Any:
    """``INSERT ... ON CONFLICT (conflict_columns) [WHERE where] DO NOTHING`` for the dialect of ``on`` (as for
    :func:`upsert`; ``where``: the predicate of a partial unique index); add ``.values()``."""
    return upsert(on, table).on_conflict_do_nothing(index_elements=list(conflict_columns), index_where=where)


def is_postgresql(session: Session) -> bool:
    """Whether the session talks to PostgreSQL (else SQLite)."""
    return bool(session.get_bind().dialect.name == "postgresql")


def relax_durability(session: Session) -> None:
    """This transaction may commit without waiting for the WAL flush (PostgreSQL; read models only)."""
    if is_postgresql(session):
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True, slots=True)
class RawStatement:
    """A PostgreSQL statement in the server's own ``$n`` placeholders, converted once from ``:name`` text
    (the text must hold no ``:word`` inside a string literal)."""

    sql: bytes
    names: tuple[str, ...]

    @classmethod
    def of(cls, sql: str) -> RawStatement:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        return cls(_NAMED.sub(number, sql).encode(), tuple(names))


def execute_raw(session: Session, statement: RawStatement, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Run ``statement`` on the session's PostgreSQL connection straight through the driver, as a prepared
    statement, and return its first row.

    For the engine's one statement per step: it skips SQLAlchemy's compilation and result set-up and the
    driver's query parsing, about a third of a step's CPU. The statement joins the session's transaction (or
    autocommits on a :func:`pinned_session`). A driver error comes back as SQLAlchemy's (an unreachable database
    is an ``OperationalError``, a broken connection is invalidated), so retries work as for any statement.
    """
    connection = session.connection()
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    values = [params[name] for name in statement.names]
    try:
        with psycopg.RawCursor(raw) as cursor:
            cursor.execute(statement.sql, values, prepare=True)
            return cursor.fetchone()
    except psycopg.Error as exc:
        raise _driver_error(connection, raw, statement, values, exc) from exc


class SentStatement:
    """A statement sent on a PostgreSQL connection whose answer is read later (:func:`send_raw`): the
    server works on it while the caller goes on. Nothing else may use the connection until :meth:`row`."""

    def __init__(self, connection: Connection, raw: psycopg.Connection[Any], statement: RawStatement,
                 values: list[Any]) -> None:
        self._connection, self._raw, self._statement, self._values = connection, raw, statement, values
        self._done = False
        self._row: tuple[Any, ...] | None = None

    def row(self) -> tuple[Any, ...] | None:
        """The statement's first row (waiting for it if it has not come yet); a driver error as SQLAlchemy's,
        as from :func:`execute_raw`."""
        if self._done:
            return self._row
        self._done = True
        raw = self._raw
        try:
            results = raw.wait(fetch_many(raw.pgconn))
            error = next((r for r in results if r.status == pq.ExecStatus.FATAL_ERROR), None)
            if error is not None:
                raise psycopg.errors.error_from_result(error, encoding=raw.info.encoding)
            transformer = Transformer(raw)
            transformer.set_pgresult(results[0])
            self._row = transformer.load_row(0, tuple) if results[0].ntuples else None
            return self._row
        except psycopg.Error as exc:
            raise _driver_error(self._connection, raw, self._statement, self._values, exc) from exc


def send_raw(session: Session, statement: RawStatement, params: Mapping[str, Any]) -> SentStatement:
    """Send ``statement`` (prepared on first use on this connection) without waiting for its answer.

    For a pure step's write on the worker's autocommitted connection (:func:`pinned_session`): the server
    executes and commits it while the engine runs the next step, and the engine reads the answer before it
    writes again. Only there: libpq sends no ``BEGIN`` of its own, so on a connection in a transaction the
    statement would run outside it (:func:`execute_raw` goes through psycopg's cursor, which does)."""
    connection = session.connection()
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection) and raw.autocommit
    values = [params[name] for name in statement.names]
    try:
        name = _prepared_on(raw, statement)
        transformer = Transformer(raw)
        # text: the server reads each value as its parameter's type (binary ints differ in width per value)
        dumped = transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
        raw.pgconn.send_query_prepared(name, dumped, param_formats=transformer.formats)
        raw.wait(send(raw.pgconn))
    except psycopg.Error as exc:
        raise _driver_error(connection, raw, statement, values, exc) from exc
    return SentStatement(connection, raw, statement, values)


_prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[bytes, bytes]] = weakref.WeakKeyDictionary()


def _prepared_on(raw: psycopg.Connection[Any], statement: RawStatement) -> bytes:
    names = _prepared.setdefault(raw, {})
    name = names.get(statement.sql)
    if name is None:
        name = f"_mw_{len(names)}".encode()
        result = raw.pgconn.prepare(name, statement.sql)
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=raw.info.encoding)
        names[statement.sql] = name
    return name


def _driver_error(connection: Connection, raw: psycopg.Connection[Any], statement: RawStatement, values: list[Any],
                  exc: psycopg.Error) -> StatementError:
    broken = raw.broken or raw.closed
    if broken:  # the pool must not hand this connection out again
        connection.invalidate(exc)
    return DBAPIError.instance(statement.sql.decode(), values, exc, psycopg.Error, hide_parameters=True,
                               connection_invalidated=broken)


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is (briefly) unreachable: back off and retry."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


@contextmanager
def read_only() -> Iterator[Session]:
    """A read-only session for dashboards and reports: never commits, never takes SQLite's write lock."""
    session = session_factory()(bind=get_engine().execution_options(**{READ_ONLY_OPTION: True}))
    try:
        yield session
    finally:
        session.rollback()
        session.close()


DB_RETRY_FOR_S = 120.0


def with_db_retry(fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` (one unit of work), backing off while the database is unreachable (up to two minutes).

    A PostgreSQL restart makes workers wait and continue instead of crash-looping. ``fn`` must be safe
    to run again: a failed attempt's transaction was rolled back.
    """
    delay = 0.2
    deadline = time.monotonic() + DB_RETRY_FOR_S
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient_db_error(exc) or time.monotonic() > deadline:
                raise
            from tenants.kit.logging import get_logger

            get_logger("db").warning("database_unavailable_backing_off", what=what, delay_s=round(delay, 2),
                                     error=str(exc)[:200])
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def set_dispatcher(dispatcher: Dispatcher | None) -> None:
    """Install how this process sends wake-up messages (the runner's broker, set at start-up)."""
    global _dispatcher
    _dispatcher = dispatcher


def dispatch_after_commit(actor_name: str, kwargs: dict[str, Any], delay_s: float = 0.0) -> None:
    """Send a message now (the caller has already committed)."""
    if _dispatcher is None:
        raise RuntimeError("no dispatcher installed: the process did not set up its broker")
    _dispatcher(actor_name, kwargs, delay_s)


def enqueue_after_commit(session: Session, actor_name: str, delay_s: float = 0.0, *, at_most: int | None = None,
                         **kwargs: Any) -> None:
    """Queue a message by actor name; it is sent only if and after ``session`` commits.

    A rolled-back transaction sends nothing. A message lost after commit only delays work:
    the database is the source of truth and the sweeper re-sends wake-ups.
    ``at_most``: the transaction sends no more than that many messages of this actor and delay (a wake-up
    carries no work of its own, and a woken worker keeps claiming while runs are due: a thousand runs
    submitted in one transaction need a few dozen wake-ups, not a thousand).
    """
    if at_most is not None:
        counts: dict[tuple[str, float], int] = session.info.setdefault("midwatch_outbox_counts", {})
        sent = counts.get((actor_name, delay_s), 0)
        if sent >= at_most:
            return
        counts[(actor_name, delay_s)] = sent + 1
    pending: list[tuple[str, dict[str, Any], float]] = session.info.setdefault("midwatch_outbox", [])
    pending.append((actor_name, kwargs, delay_s))


def call_after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once ``session`` commits (never if it rolls back): counting a metric at the source,
    only for what really happened."""
    session.info.setdefault("midwatch_after_commit", []).append(callback)


@event.listens_for(Session, "after_commit")
def _send_outbox(session: Session) -> None:
    if session.in_nested_transaction():
        return  # SQLAlchemy also fires after_commit when a SAVEPOINT is released: wait for the real commit
    for callback in session.info.pop("midwatch_after_commit", None) or ():
        try:
            callback()
        except Exception:
            from tenants.kit.logging import get_logger

            get_logger("db").warning("after_commit_callback_failed", exc_info=True)
    session.info.pop("midwatch_outbox_counts", None)
    pending = session.info.pop("midwatch_outbox", None)
    if not pending:
        return
    for actor_name, kwargs, delay_s in pending:
        try:
            dispatch_after_commit(actor_name, kwargs, delay_s)
        except Exception:
            from tenants.kit.logging import get_logger

            get_logger("dispatch").warning("enqueue_failed", actor=actor_name, exc_info=True)


@event.listens_for(Session, "after_rollback")
def _drop_outbox(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a rolled-back SAVEPOINT does not undo the outer transaction's messages
    session.info.pop("midwatch_outbox", None)
    session.info.pop("midwatch_outbox_counts", None)
    session.info.pop("midwatch_after_commit", None)
