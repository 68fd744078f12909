"""Where the master key comes from: env, file, the embedded data dir; production refuses without one."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from tenants.kit.master_key import MasterKey, get_master_key, load_master_key
from tenants.kit.settings import Settings, reset_settings
from tenants.secrets.errors import MasterKeyUnavailable
from tests.conftest import MIDWATCH_ENV_KEYS

PRODUCTION = {"env": "production", "database_url": "postgresql://db/midwatch", "broker_url": "redis://redis:6379/0"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [*MIDWATCH_ENV_KEYS, "MIDWATCH_MASTER_KEY", "MIDWATCH_MASTER_KEY_FILE"]:
        monkeypatch.delenv(key, raising=False)


def test_the_key_comes_from_midwatch_master_key() -> None:
    key = MasterKey.generate()
    settings = Settings(**PRODUCTION, master_key=key.to_b64())
    assert load_master_key(settings).key_id == key.key_id


def test_the_key_comes_from_a_mounted_file(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master-key"
    path.write_text(key.to_b64() + "\n")
    assert load_master_key(Settings(**PRODUCTION, master_key_file=path)).key_id == key.key_id


@pytest.mark.parametrize(("value", "message"), [
    ("not base64 at all!", "not valid base64"),
    (base64.b64encode(b"x" * 16).decode(), "decodes to 16 bytes"),
])
def test_a_malformed_key_is_refused_with_a_clear_message(value: str, message: str) -> None:
    with pytest.raises(MasterKeyUnavailable, match=message) as info:
        load_master_key(Settings(**PRODUCTION, master_key=value))
    assert value not in info.value.detail  # the (would-be) key is never echoed


def test_an_unreadable_key_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyUnavailable, match="cannot be read"):
        load_master_key(Settings(**PRODUCTION, master_key_file=tmp_path / "missing"))


def test_production_settings_without_a_master_key_refuse_to_start() -> None:
    with pytest.raises(ValidationError, match="MIDWATCH_MASTER_KEY") as info:
        Settings(**PRODUCTION)
    assert "MIDWATCH_MASTER_KEY_FILE" in str(info.value)
    # and the loader refuses too, were the validator bypassed
    unchecked = Settings.model_construct(**PRODUCTION, master_key=None, master_key_file=None)
    with pytest.raises(MasterKeyUnavailable, match="only the embedded mode generates one"):
        load_master_key(unchecked)


def test_both_a_key_and_a_key_file_is_ambiguous_and_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="only one of"):
        Settings(master_key=MasterKey.generate().to_b64(), master_key_file=tmp_path / "k")


def test_embedded_mode_generates_a_0600_key_file_once_and_reuses_it_across_restarts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDWATCH_DATA_DIR", str(tmp_path / "data"))
    reset_settings()
    first = get_master_key()
    path = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == first.to_b64()
    reset_settings()  # a restart: settings (and the key) are read again
    assert get_master_key().key_id == first.key_id
    assert load_master_key(Settings(data_dir=tmp_path / "data")).key_id == first.key_id
    reset_settings()
