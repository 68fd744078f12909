"""The API refuses secret names a spec can never reference (issue 16, item 8): one rule for both."""

from __future__ import annotations

import pytest

from runner.spec import parse_spec
from tests.conftest import Harness


@pytest.mark.parametrize("name", ["CRM_KEY", "crm.key", "1key", "k" * 64, "crm key", ""])
def test_a_name_no_spec_could_reference_is_refused_and_a_usable_one_is_accepted(harness: Harness, name: str) -> None:
    tenant = harness.onboard()
    r = harness.client.post("/v1/secrets", json={"name": name, "value": "v4lue"}, headers=tenant.headers)
    assert r.status_code == 422, r.text
    spec = parse_spec({"apiVersion": "midwatch/v1", "name": "a", "scope": {"secrets": [name]},
                       "steps": [{"id": "s", "tool": "sandbox.echo"}]})
    assert spec.errors, f"the spec accepts {name!r} although the API refuses it"


def test_every_name_the_api_accepts_a_spec_can_reference(harness: Harness) -> None:
    tenant = harness.onboard()
    for name in ("crm_key", "stripe-live", "k" * 63):
        r = harness.client.post("/v1/secrets", json={"name": name, "value": "v4lue"}, headers=tenant.headers)
        assert r.status_code == 201, r.text
        spec = parse_spec({"apiVersion": "midwatch/v1", "name": "a",
                           "scope": {"tools": ["sandbox.echo"], "secrets": [name]},
                           "steps": [{"id": "s", "tool": "sandbox.echo"}]})
        assert spec.errors == [], spec.errors
