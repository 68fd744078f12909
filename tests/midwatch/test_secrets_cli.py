"""`midwatch secrets rotate-master-key` (midwatch.secrets_cli): embedded and env-configured keys."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from midwatch.secrets_cli import rotate_master_key_command
from tenants.accounts.service import onboard_tenant
from tenants.kit.db import unit_of_work
from tenants.kit.master_key import MasterKey, get_master_key
from tenants.kit.settings import reset_settings
from tenants.secrets import service
from tenants.secrets.errors import MasterKeyMismatch
from tests.conftest import _apply_env, _reset_process

Setup = Callable[..., str]


@pytest.fixture
def midwatch_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """Configure a fresh SQLite Midwatch (plus ``extra`` env), migrate it, store two secrets; returns the tenant."""
    from tenants.migrations import upgrade

    def setup(**extra: str) -> str:
        _apply_env(monkeypatch, {"MIDWATCH_DATA_DIR": str(tmp_path / "data"), "MIDWATCH_LOG_LEVEL": "warning",
                                 **extra})
        _reset_process()
        (tmp_path / "data").mkdir(exist_ok=True)
        upgrade()
        with unit_of_work() as session:
            tenant, _ = onboard_tenant(session, "acme")
            service.create_secret(session, tenant.id, "crm_token", "crm-value-1")
            service.create_secret(session, tenant.id, "mail", "mail-value-1")
        return tenant.id

    yield setup
    _reset_process()


def _resolve(tenant_id: str, name: str, master: MasterKey | None = None) -> str:
    with unit_of_work() as session:
        return service.resolve(session, tenant_id, name, master=master)


def test_embedded_rotation_generates_a_new_key_file_and_the_old_key_stops_working(
        midwatch_db: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tenant_id = midwatch_db()
    old = get_master_key()
    assert rotate_master_key_command(None) == 0
    out = capsys.readouterr().out
    assert "re-wrapped 2 secret version(s)" in out and "restart" in out
    key_file = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and not (tmp_path / "data" / "master.key.next").exists()
    reset_settings()  # the restart
    new = get_master_key()
    assert new.key_id != old.key_id and new.key_id in out
    assert _resolve(tenant_id, "crm_token") == "crm-value-1" and _resolve(tenant_id, "mail") == "mail-value-1"
    with pytest.raises(MasterKeyMismatch):
        _resolve(tenant_id, "crm_token", master=old)
    assert old.to_b64() not in out and new.to_b64() not in out  # keys are never printed


def test_env_configured_rotation_takes_the_new_key_from_the_environment(
        midwatch_db: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    tenant_id = midwatch_db(MIDWATCH_MASTER_KEY=old.to_b64())
    assert rotate_master_key_command(None) == 2  # no new key given: usage error, nothing touched
    assert "MIDWATCH_NEW_MASTER_KEY" in capsys.readouterr().out
    assert _resolve(tenant_id, "mail", master=old) == "mail-value-1"

    monkeypatch.setenv("MIDWATCH_NEW_MASTER_KEY", new.to_b64())
    assert rotate_master_key_command(None) == 0
    out = capsys.readouterr().out
    assert "re-wrapped 2 secret version(s)" in out and "MIDWATCH_MASTER_KEY" in out and new.key_id in out
    assert _resolve(tenant_id, "mail", master=new) == "mail-value-1"
    with pytest.raises(MasterKeyMismatch):
        _resolve(tenant_id, "mail", master=old)


def test_a_configured_key_that_is_not_the_vaults_key_fails_the_rotation(
        midwatch_db: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    vault_key = MasterKey.generate()
    tenant_id = midwatch_db(MIDWATCH_MASTER_KEY=vault_key.to_b64())
    monkeypatch.setenv("MIDWATCH_MASTER_KEY", MasterKey.generate().to_b64())  # an operator's mistake
    reset_settings()
    assert rotate_master_key_command(MasterKey.generate().to_b64()) == 1
    assert "is MIDWATCH_MASTER_KEY the key this vault was encrypted with" in capsys.readouterr().out
    assert _resolve(tenant_id, "crm_token", master=vault_key) == "crm-value-1"
