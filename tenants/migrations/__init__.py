"""Alembic migrations for every Midwatch table; run with ``midwatch db upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from tenants.kit.settings import get_settings

__all__ = ["alembic_config", "upgrade"]


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at this folder and the process's database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().sqlalchemy_url).replace("%", "%%"))
    return cfg


def upgrade(revision: str = "head", url: str | None = None) -> None:
    """Bring the database schema to ``revision``."""
    command.upgrade(alembic_config(url), revision)
