"""A database that is restarting answers 503 ``unavailable`` with Retry-After, never a 500 or its SQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.exc import OperationalError

from tests.conftest import Harness


def test_requests_during_a_database_outage_get_503_with_retry_after(make_harness: Callable[..., Harness],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    h = make_harness(worker=None)
    tenant = h.onboard()
    assert h.client.get("/v1/runs", headers=tenant.headers).status_code == 200  # the key is verified and cached

    def down() -> None:
        raise OperationalError("SELECT secret_column FROM runs", {}, Exception("server closed the connection"))

    monkeypatch.setattr("tenants.kit.db.session_factory", down)
    r = h.client.get("/v1/runs", headers=tenant.headers)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "unavailable" and r.headers["Retry-After"] == "2"
    assert "SELECT" not in r.text and "secret_column" not in r.text
