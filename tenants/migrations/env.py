"""Alembic environment: runs migrations on the configured engine (online mode only)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import tenants.models  # noqa: F401  (registers every table on Base.metadata)
from tenants.kit.db import Base

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
