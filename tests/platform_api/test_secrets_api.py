"""/v1/secrets end to end through the real API: values go in and never come out."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import inspect, select, text

from tenants.kit.db import get_engine, unit_of_work
from tenants.secrets.keyring_backend import get_secret, install_keyring
from tests.conftest import Harness

DBS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Recorder:
    """Sends requests through the harness client and keeps every response body."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.bodies: list[str] = []

    def __call__(self, method: str, path: str, headers: dict[str, str], expect: int, **kw: Any) -> Any:
        r = self.h.client.request(method, path, headers=headers, **kw)
        self.bodies.append(r.text + json.dumps(dict(r.headers)))
        assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r.json() if r.content else None


@pytest.mark.parametrize("db", DBS)
def test_secrets_lifecycle_through_the_api_never_returns_a_value(
        make_harness: Callable[..., Harness], db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring.core

    monkeypatch.setattr(keyring.core, "_keyring_backend", keyring.core._keyring_backend)
    h = make_harness(db=db, worker=None)
    call = Recorder(h)
    tenant, other = h.onboard(), h.onboard()
    admin = tenant.headers
    first, second = f"tok-{secrets.token_urlsafe(20)}", f"tok-{secrets.token_urlsafe(20)}"
    viewer_key = call("POST", "/v1/keys", admin, 201, json={"role": "viewer"})["key"]
    viewer = {"Authorization": f"Bearer {viewer_key}"}

    # Given a tenant admin stores a secret
    created = call("POST", "/v1/secrets", admin, 201,
                   json={"name": "crm_token", "value": first, "max_age_days": 90, "grace_seconds": 120})
    assert created["name"] == "crm_token" and created["current_version"] == 1
    assert created["max_age_days"] == 90 and created["grace_seconds"] == 120 and created["rotation_due"] is False
    assert "value" not in created

    # Then admins and viewers see metadata only
    listed = call("GET", "/v1/secrets", viewer, 200)
    assert [s["name"] for s in listed["data"]] == ["crm_token"] and "value" not in listed["data"][0]
    assert call("GET", "/v1/secrets/crm_token", admin, 200)["age_days"] == 0

    # When it is rotated and promoted
    rotated = call("POST", "/v1/secrets/crm_token/rotate", admin, 201, json={"value": second})
    assert (rotated["current_version"], rotated["pending_version"]) == (1, 2)
    call("POST", "/v1/secrets/crm_token/promote", admin, 409, json={"version": 1})
    call("POST", "/v1/secrets/crm_token/promote", admin, 422, json={"verify_with_tool": "crm.ping"})
    promoted = call("POST", "/v1/secrets/crm_token/promote", admin, 200, json={"version": 2})
    assert (promoted["current_version"], promoted["previous_version"]) == (2, 1)
    assert promoted["previous_expires_at"] and promoted["last_rotated_at"]
    call("POST", "/v1/secrets/crm_token/promote", admin, 409)  # nothing pending any more; body optional

    # The runner reads the values through keyring, and the use shows in the metadata
    install_keyring()
    assert get_secret(tenant.id, "crm_token") == second
    assert get_secret(tenant.id, "crm_token", "previous") == first
    assert call("GET", "/v1/secrets/crm_token", viewer, 200)["last_used_at"] is not None

    # Errors that carry the value in the request never echo it
    call("POST", "/v1/secrets", admin, 409, json={"name": "crm_token", "value": first})
    call("POST", "/v1/secrets", admin, 422, json={"name": "x", "value": first, "colour": "red"})
    call("POST", "/v1/secrets", admin, 422, json={"name": "x", "value": first, "max_age_days": "30"})
    call("POST", "/v1/secrets", admin, 422, json={"name": "bad name", "value": first})
    call("POST", "/v1/secrets", admin, 422, json={"name": "x", "value": first * 1000})
    call("POST", "/v1/secrets/crm_token/rotate", admin, 422, json={"value": 12345})
    call("POST", "/v1/secrets", viewer, 403, json={"name": "y", "value": first})
    call("POST", "/v1/secrets/crm_token/rotate", viewer, 403, json={"value": first})
    # Another tenant cannot see or touch it (404, not 403)
    call("GET", "/v1/secrets/crm_token", other.headers, 404)
    call("POST", "/v1/secrets/crm_token/rotate", other.headers, 404, json={"value": first})
    call("DELETE", "/v1/secrets/crm_token", other.headers, 404)
    assert call("GET", "/v1/secrets", other.headers, 200)["data"] == []
    # OpenAPI documents the resource without any value field in responses
    schema = call("GET", "/schema/openapi.json", {}, 200)
    assert "/v1/secrets/{name}/rotate" in schema["paths"]
    assert "value" not in schema["components"]["schemas"]["SecretOut"]["properties"]

    # Finally it is deleted
    call("DELETE", "/v1/secrets/crm_token", admin, 204)
    call("GET", "/v1/secrets/crm_token", admin, 404)
    assert call("GET", "/v1/secrets", admin, 200)["data"] == []

    for body in call.bodies:
        assert first not in body and second not in body
    _assert_no_plaintext_in_the_database([first, second], tenant.id)


def _assert_no_plaintext_in_the_database(values: list[str], tenant_id: str) -> None:
    """No row of any table holds a plaintext (the vault itself holds only ciphertexts, now wiped)."""
    engine = get_engine()
    with unit_of_work() as session:
        for table in inspect(engine).get_table_names():
            for row in session.execute(text(f"SELECT * FROM {table}")).all():
                dumped = repr(tuple(row))
                for value in values:
                    assert value not in dumped, f"plaintext found in table {table}"
        from tenants.secrets.models import SecretVersion

        blobs = session.execute(select(SecretVersion.ciphertext, SecretVersion.wrapped_key)
                                .where(SecretVersion.tenant_id == tenant_id)).all()
        assert blobs and all(c is None and w is None for c, w in blobs)  # deleted: wiped
