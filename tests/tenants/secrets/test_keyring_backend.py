"""The keyring backend: selected explicitly, never auto-detected; get_secret is the runner's way in,
and every value it returns is redacted from logs afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import keyring
import keyring.backend
import keyring.core
import keyring.errors
import pytest
import structlog
from keyring.backends import chainer, fail

import tenants.kit.logging as kit_logging
from tenants.kit.db import unit_of_work
from tenants.kit.logging import configure_logging, get_logger, redact
from tenants.secrets import service
from tenants.secrets.errors import SecretNotFound, SecretsError
from tenants.secrets.keyring_backend import (
    MidwatchKeyring,
    get_secret,
    get_secret_for_retry,
    install_keyring,
    service_name,
)
from tests.conftest import Harness

pytestmark = pytest.mark.usefixtures("restore_keyring")


def test_auto_detection_never_picks_the_midwatch_backend() -> None:
    assert MidwatchKeyring in keyring.backend.KeyringBackend._classes  # registered by subclassing...
    assert MidwatchKeyring.viable is False  # ...but its priority raises, so it is never a candidate
    assert not any(isinstance(b, MidwatchKeyring) for b in keyring.backend.get_all_keyring())
    assert not isinstance(keyring.core._detect_backend(), MidwatchKeyring)
    assert not any(isinstance(b, MidwatchKeyring) for b in chainer.ChainerBackend.backends)
    assert "explicit only" in str(MidwatchKeyring())


def test_get_secret_refuses_to_read_through_any_other_backend(tenant_id: str) -> None:
    keyring.set_keyring(fail.Keyring())
    with pytest.raises(SecretsError, match="install_keyring"):
        get_secret(tenant_id, "api")


def test_keyring_get_password_resolves_the_current_value_once_installed(tenant_id: str, plaintext: str) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "crm_token", plaintext)
    install_keyring()
    assert isinstance(keyring.get_keyring(), MidwatchKeyring)
    assert keyring.get_password(service_name(tenant_id), "crm_token") == plaintext
    assert get_secret(tenant_id, "crm_token") == plaintext
    assert keyring.get_password(service_name(tenant_id), "missing") is None
    assert keyring.get_password("some-other-app", "crm_token") is None
    with pytest.raises(SecretNotFound):
        get_secret(tenant_id, "missing")


def test_set_password_creates_then_stages_and_delete_password_deletes(tenant_id: str) -> None:
    install_keyring()
    svc = service_name(tenant_id)
    keyring.set_password(svc, "mail", "first-value")
    assert keyring.get_password(svc, "mail") == "first-value"
    keyring.set_password(svc, "mail", "second-value")  # staged, not yet current
    assert keyring.get_password(svc, "mail") == "first-value"
    assert keyring.get_password(svc, "mail#pending") == "second-value"
    with unit_of_work() as session:
        service.promote_secret(session, tenant_id, "mail")
    assert get_secret(tenant_id, "mail") == "second-value"
    assert get_secret(tenant_id, "mail", "previous") == "first-value"
    keyring.delete_password(svc, "mail")
    assert keyring.get_password(svc, "mail") is None
    with pytest.raises(keyring.errors.PasswordDeleteError):
        keyring.delete_password(svc, "mail")
    with pytest.raises(keyring.errors.PasswordSetError):
        keyring.set_password(svc, "bad name", "value")


def test_the_retry_value_after_a_401_is_pending_then_previous_then_nothing(tenant_id: str) -> None:
    install_keyring()
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "v-one")
    assert get_secret_for_retry(tenant_id, "api") is None
    with unit_of_work() as session:
        service.rotate_secret(session, tenant_id, "api", "v-two")
    assert get_secret_for_retry(tenant_id, "api") == "v-two"
    with unit_of_work() as session:
        service.promote_secret(session, tenant_id, "api")
    assert get_secret_for_retry(tenant_id, "api") == "v-one"


def test_a_resolved_value_is_redacted_from_structlog_and_redact(
        tenant_id: str, plaintext: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "crm_token", plaintext)
    # A worker process that never saw the value being created: it learns it only by resolving.
    monkeypatch.setattr(kit_logging, "_known", set())
    monkeypatch.setattr(kit_logging, "_known_re", None)
    assert redact(f"x {plaintext} y") == f"x {plaintext} y"
    install_keyring()
    value = get_secret(tenant_id, "crm_token")
    assert value == plaintext

    configure_logging("info", "json")
    try:
        capsys.readouterr()
        get_logger("runner").warning("upstream_said", body=f"echo: {value}!", args={"header": value})
        get_logger("runner").info("plain", text=value)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    finally:
        structlog.reset_defaults()
    assert lines and plaintext not in json.dumps(lines)
    assert lines[0]["body"] == "echo: [REDACTED]!" and lines[1]["text"] == "[REDACTED]"
    assert redact({"note": f"token={plaintext}", "items": [plaintext]}) == {
        "note": "token=[REDACTED]", "items": ["[REDACTED]"]}


def test_process_start_up_loads_the_master_key_and_selects_the_midwatch_keyring(
        make_harness: Callable[..., Harness], tmp_path: Path) -> None:
    keyring.set_keyring(fail.Keyring())
    make_harness(worker=None)  # runs midwatch.services.bootstrap, as every process does
    assert isinstance(keyring.get_keyring(), MidwatchKeyring)
    assert (tmp_path / "data" / "master.key").exists()
