"""The embedded database holds every tenant's data: midwatch.db and its -wal/-shm are 0600 like master.key."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from tenants.kit.db import reset_engine, unit_of_work
from tests.conftest import Harness


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_embedded_database_and_its_wal_files_are_private(make_harness: Callable[..., Harness],
                                                             tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask: new files would be world-readable
    try:
        make_harness(worker=None)
        db = tmp_path / "data" / "midwatch.db"
        reset_engine()
        db.unlink()  # as on a first start: the file is created by this process
        with unit_of_work() as session:  # an open write transaction: the WAL and shared-memory files exist
            session.connection().exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (n INTEGER)")
            session.connection().exec_driver_sql("INSERT INTO probe VALUES (1)")
            for path in (db, db.with_name("midwatch.db-wal"), db.with_name("midwatch.db-shm")):
                assert path.exists(), path
                assert _mode(path) == 0o600, f"{path.name} is {oct(_mode(path))}"
    finally:
        os.umask(previous)


def test_an_older_world_readable_database_is_tightened_at_start(make_harness: Callable[..., Harness],
                                                               tmp_path: Path) -> None:
    make_harness(worker=None)
    db = tmp_path / "data" / "midwatch.db"
    db.chmod(0o644)
    reset_engine()
    with unit_of_work() as session:
        session.connection().exec_driver_sql("SELECT 1")
    assert _mode(db) == 0o600
