"""The rehearsal space's database: a throwaway one, never the installation's.

- On the embedded default (SQLite) the space is a fresh SQLite file in the rehearsal's temporary
  directory; the directory goes when the rehearsal ends.
- On PostgreSQL it is a throwaway schema (``mw_rehearsal_<id>``) of the installation's database, reached
  through ``search_path`` so every table the platform knows is created there and nothing outside it is
  visible; it is dropped (``CASCADE``) when the rehearsal ends, and :func:`drop_orphan_schemas` removes
  those of rehearsals whose process died.

The space holds one tenant (``rehearsal``) with a copy of the agent's version, its tools and models, and
the rehearsal's runs. Its tables come from the current models (``Base.metadata``), like a fresh install.
The rehearsal's worker process (with the space as its ``MIDWATCH_DATABASE_URL``) creates and fills it with
:func:`prepare`; the orchestrator only reads it, with its own engine (:class:`SpaceDatabase`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import onboard_tenant
from tenants.agents.service import store_version
from tenants.approvals.service import decide
from tenants.catalog.repository import CatalogRepository
from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.settings import driver_url
from tenants.rehearsals.repository import SpaceRepository
from tenants.runs.service import submit_run

__all__ = ["SCHEMA_PREFIX", "SPACE_TENANT", "SpaceDatabase", "SpaceRun", "decide_pending",
           "drop_orphan_schemas", "prepare", "space_runs"]

SPACE_TENANT = "rehearsal"
SCHEMA_PREFIX = "mw_rehearsal_"
_SCHEMA = re.compile(r"^mw_rehearsal_[a-z0-9_]{1,40}$")


@dataclass(frozen=True, slots=True)
class SpaceRun:
    """A run of the rehearsal: its repetition (1-based) and the index of its first item among the inputs."""

    run_id: str
    rep: int
    offset: int


def _with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (replacing any ``search_path`` the URL already sets)."""
    parsed = make_url(url)
    options = str(parsed.query.get("options", ""))
    kept = [o for o in options.split() if "search_path" not in o]
    kept.append(f"-csearch_path={schema}")
    return parsed.update_query_dict({"options": " ".join(kept)}).render_as_string(hide_password=False)


@dataclass
class SpaceDatabase:
    """Where a rehearsal space lives (``url``: what its worker uses as ``MIDWATCH_DATABASE_URL``)."""

    url: str
    schema: str | None = None
    installation_url: str | None = None
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def sqlite(cls, directory: Path) -> SpaceDatabase:
        """A SQLite file in the rehearsal's own directory."""
        return cls(url=f"sqlite:///{(directory / 'space.db').resolve()}")

    @classmethod
    def postgres(cls, installation_url: str, rehearsal_id: str) -> SpaceDatabase:
        """A new schema of the installation's PostgreSQL database."""
        schema = SCHEMA_PREFIX + re.sub(r"[^a-z0-9_]", "_", rehearsal_id.lower())[-40:]
        if not _SCHEMA.match(schema):
            raise ValueError(f"bad rehearsal schema name {schema!r}")
        _admin_execute(installation_url, f'CREATE SCHEMA "{schema}"')
        return cls(url=_with_search_path(installation_url, schema), schema=schema, installation_url=installation_url)

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(driver_url(self.url), poolclass=NullPool)
        return self._engine

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session on the space (the orchestrator only reads)."""
        session = Session(bind=self.engine(), expire_on_commit=False)
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    def drop(self) -> None:
        """Forget the space: dispose the engine and, on PostgreSQL, drop the schema."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.schema is not None and self.installation_url is not None:
            _drop_schema(self.installation_url, self.schema)


def _drop_schema(installation_url: str, schema: str) -> None:
    if not _SCHEMA.match(schema):
        raise ValueError(f"refusing to drop {schema!r}: not a rehearsal schema")
    _admin_execute(installation_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _admin_execute(installation_url: str, statement: str) -> None:
    """One DDL statement on the installation's database, on a connection of its own."""
    admin = create_engine(driver_url(installation_url), poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def _born(schema: str) -> float | None:
    """When the rehearsal owning ``schema`` started (its id carries the time: ``rhr_<ms in hex>...``)."""
    m = re.match(r"^mw_rehearsal_rhr_([0-9a-f]{12})", schema)
    return int(m.group(1), 16) / 1000 if m else None


def drop_orphan_schemas(installation_url: str, *, older_than_s: float = 3600.0) -> int:
    """Drop rehearsal schemas older than ``older_than_s`` (left by a rehearsal whose process died: a live one
    never lasts that long); how many."""
    admin = create_engine(driver_url(installation_url), poolclass=NullPool)
    try:
        with admin.connect() as conn:
            names = [str(n) for n in conn.execute(text(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'mw\\_rehearsal\\_%'"))
                .scalars()]
    finally:
        admin.dispose()
    horizon = time.time() - older_than_s
    orphans = [n for n in names if _SCHEMA.match(n) and (born := _born(n)) is not None and born < horizon]
    for name in orphans:
        _drop_schema(installation_url, name)
    return len(orphans)


# ---- inside the rehearsal's worker process (the space is the process's database) ------------------------

def prepare(*, agent_name: str, spec: dict[str, Any], tools: dict[str, dict[str, Any]],
            models: dict[str, dict[str, Any]], runs: Sequence[dict[str, Any]]) -> tuple[str, list[SpaceRun]]:
    """Fill the space once: its tenant, the agent's version, tools and models, and the rehearsal's runs
    (submitted in the same transaction; their wake-ups go out after commit). A restarted worker finds the
    tenant and only reads. Returns the tenant id and the runs."""
    with unit_of_work() as session:
        tenant = AccountsPlatformRepository(session).tenant_by_name(SPACE_TENANT)
        if tenant is None:
            tenant, _ = onboard_tenant(session, SPACE_TENANT, "Rehearsal space")
            stored = store_version(session, tenant.id, agent_name, spec, [])
            catalog = CatalogRepository(session, tenant.id)
            now = utcnow()
            for name, definition in tools.items():
                catalog.put_tool(name, {**definition, "name": name}, now)
            for alias, config in models.items():
                catalog.put_model(alias, {**config, "alias": alias}, now)
            for run in runs:
                submit_run(session, tenant.id, stored.version, agent_name, run["input"], run["items"], run["key"])
        tenant_id = str(tenant.id)
    return tenant_id, space_runs(tenant_id)


def space_runs(tenant_id: str, session: Session | None = None) -> list[SpaceRun]:
    """The space's runs with their repetition and item offset (from their idempotency keys)."""
    def read(s: Session) -> list[SpaceRun]:
        out = []
        for run in SpaceRepository(s, tenant_id).runs():
            m = re.fullmatch(r"rehearsal:r(\d+)(?::i(\d+))?", run.idempotency_key or "")
            if m is not None:
                out.append(SpaceRun(run.id, int(m.group(1)), int(m.group(2) or 0)))
        return out

    if session is not None:
        return read(session)
    with unit_of_work() as own:
        return read(own)


def decide_pending(tenant_id: str, *, approve: bool) -> int:
    """Answer every pending approval of the space as the scripted human; how many were answered."""
    with unit_of_work() as session:
        pending = SpaceRepository(session, tenant_id).pending_approvals()
    for approval_id in pending:
        with unit_of_work() as session:
            decide(session, tenant_id, approval_id, approve=approve, role="tenant-admin", key_id="rehearsal-human",
                   comment="the rehearsal's scripted human")
    return len(pending)
