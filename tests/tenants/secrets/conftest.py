"""Fixtures of the vault tests: a migrated database (SQLite and PostgreSQL) shared by a module, a
fresh tenant per test (tenants isolate tests from each other), unique plaintexts, the keyring."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import keyring.core
import pytest

from tests.conftest import _apply_env, _reset_process


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def vault(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A configured, migrated Midwatch database for the module; returns its data dir (embedded master key)."""
    from tenants.migrations import upgrade

    data_dir = tmp_path_factory.mktemp(f"vault-{request.param}")
    env = {"MIDWATCH_DATA_DIR": str(data_dir), "MIDWATCH_LOG_LEVEL": "warning"}
    if request.param == "postgres":
        env["MIDWATCH_DATABASE_URL"] = request.getfixturevalue("pg_schema_url")
    with pytest.MonkeyPatch.context() as mp:
        _apply_env(mp, env)
        _reset_process()
        upgrade()
        yield data_dir
        _reset_process()


def new_tenant() -> str:
    """Onboard a tenant directly through the accounts service; returns its id."""
    from tenants.accounts.service import onboard_tenant
    from tenants.kit.db import unit_of_work

    with unit_of_work() as session:
        tenant, _ = onboard_tenant(session, f"t-{secrets.token_hex(5)}")
        return tenant.id


@pytest.fixture
def tenant_id(vault: Path) -> str:
    return new_tenant()


@pytest.fixture
def plaintext() -> str:
    """A value unique to the test, so redaction registered by other tests cannot hide a leak."""
    return f"sk-live-{secrets.token_urlsafe(24)}"


@pytest.fixture
def restore_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put back whatever keyring backend the process had (set_keyring is process-global)."""
    monkeypatch.setattr(keyring.core, "_keyring_backend", keyring.core._keyring_backend)
    yield
