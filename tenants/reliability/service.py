"""Operator utilities of the read side: bulk loading for seeds and benchmarks.

The dashboard's queries are one module per page (see :mod:`tenants.reliability.common`); the write side
of the read models is :mod:`tenants.reliability.derive`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tenants.reliability.repository import PlatformReliabilityRepository, bulk_loader

__all__ = ["load_rows", "table_count"]


def load_rows(session: Session, table_name: str, rows: list[dict[str, Any]]) -> int:
    """Bulk-insert rows into any Midwatch table (COPY on PostgreSQL); for seeding history, never for runs
    the runner executes."""
    return bulk_loader(session).load(table_name, rows)


def table_count(session: Session, table_name: str) -> int:
    """Row count of a table (benchmark reporting)."""
    return PlatformReliabilityRepository(session).count(table_name)
