"""The API's /metrics names tenants, agents, hosts and secrets, and the API is public (it sits behind the
Ingress): with MIDWATCH_METRICS_TOKEN only that bearer token reads it; without one only an embedded install
serves it; a production API refuses it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import SecretStr

from platform_api.observability import check_metrics_access
from tenants.kit.errors import Forbidden
from tenants.kit.settings import Settings
from tests.conftest import Harness

TOKEN = "metrics-token-0123456789abcdef"


def test_with_a_token_only_its_bearer_reads_the_metrics(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker=None, extra={"MIDWATCH_METRICS_TOKEN": TOKEN})
    tenant = h.onboard()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, tenant.headers, h.op_headers):
        r = h.client.get("/metrics", headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (headers, r.text)
        assert tenant.id not in r.text
    r = h.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and f'tenant="{tenant.id}"' in r.text


def test_without_a_token_an_embedded_install_serves_them_and_production_refuses() -> None:
    check_metrics_access(Settings(env="embedded"), None)
    production = Settings.model_construct(env="production", metrics_token=None)  # (its services are not needed)
    with pytest.raises(Forbidden, match="MIDWATCH_METRICS_TOKEN"):
        check_metrics_access(production, "Bearer anything")
    check_metrics_access(Settings.model_construct(env="production", metrics_token=SecretStr(TOKEN)),
                         f"Bearer {TOKEN}")
