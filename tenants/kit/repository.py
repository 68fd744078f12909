"""Repository bases. Every tenant repository is built with a tenant id and scopes every query by it;
the only unscoped path is the operator's explicit :class:`PlatformRepository`.

Dialects: where PostgreSQL and SQLite need different SQL for one concern, the concern is one repository
class written for SQLite (plain statements; SQLite serialises writers) with a PostgreSQL subclass that
overrides what PostgreSQL does better (one statement of CTEs, ``SKIP LOCKED``, ``COPY``), and a factory
that picks by the session's dialect with :func:`for_dialect` (as DBOS keeps one system-database class with
a subclass per database). Repositories never branch on the dialect inside a method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from tenants.kit.db import is_postgresql

__all__ = ["PlatformRepository", "TenantRepository", "for_dialect", "keyset_pages"]

R = TypeVar("R")
K = TypeVar("K")


class TenantRepository:
    """Base of all tenant-scoped repositories: no tenant id, no repository."""

    def __init__(self, session: Session, tenant_id: str) -> None:
        if not tenant_id:
            raise ValueError("a tenant repository needs a tenant_id")
        self.session = session
        self.tenant_id = tenant_id


def for_dialect(session: Session, sqlite: Callable[..., R], postgresql: Callable[..., R], *args: Any) -> R:
    """An instance of the implementation for the session's database: ``postgresql(session, *args)`` on
    PostgreSQL, else ``sqlite(session, *args)``."""
    return (postgresql if is_postgresql(session) else sqlite)(session, *args)


class PlatformRepository:
    """Base of operator-only repositories that read or write across tenants, on purpose."""

    def __init__(self, session: Session) -> None:
        self.session = session


def keyset_pages(fetch: Callable[[K | None, int], Sequence[R]], key: Callable[[R], K],
                 batch: int = 1000) -> Iterator[R]:
    """Every row of a keyset-paginated read, ``batch`` at a time (bounded memory): ``fetch(cursor, limit)``
    returns the page after ``cursor`` (None: the first page), ``key(row)`` the cursor a row leaves."""
    cursor: K | None = None
    while True:
        rows = fetch(cursor, batch)
        yield from rows
        if len(rows) < batch:
            return
        cursor = key(rows[-1])
