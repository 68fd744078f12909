"""The tenant catalog over HTTP: HTTP tools with argument schemas, model aliases with cached-input prices."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness

ARGS = {"type": "object", "required": ["order"], "properties": {"order": {"type": "integer"}}}
TOOL = {"method": "POST", "url": "https://crm.example.com/notes", "description": "Leave a note on an order.",
        "args_schema": ARGS}


def test_a_tool_is_stored_with_its_description_and_args_schema(harness: Harness) -> None:
    tenant = harness.onboard()
    r = harness.client.put("/v1/tools/crm.note", headers=tenant.headers, json=TOOL)
    assert r.status_code == 201, r.text
    stored = harness.client.get("/v1/tools/crm.note", headers=tenant.headers).json()["definition"]
    assert stored["args_schema"] == ARGS and stored["description"] == "Leave a note on an order."


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "array"}, "must describe an object"),
    ({"type": "object", "properties": {"order": {"type": "int"}}}, "not a valid JSON schema"),
    ("not a schema", "valid dictionary"),
])
def test_a_broken_args_schema_is_a_422_problem_naming_the_field(harness: Harness, schema: Any, message: str) -> None:
    tenant = harness.onboard()
    r = harness.client.put("/v1/tools/crm.note", headers=tenant.headers, json={**TOOL, "args_schema": schema})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
    body = r.json()
    assert body["code"] == "validation_error" and message in body["detail"]
    assert [e["path"] for e in body["errors"]] == ["args_schema"]
    assert harness.client.get("/v1/tools/crm.note", headers=tenant.headers).status_code == 404


def test_a_model_alias_takes_a_cached_input_price_and_openai_request_options(harness: Harness) -> None:
    tenant = harness.onboard()
    config = {"provider": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-test",
              "api_key_secret": "openai_key", "price_in_per_mtok": "2.50", "price_out_per_mtok": "10",
              "price_cached_in_per_mtok": "0.25", "max_tokens_param": "max_completion_tokens",
              "send_temperature": False}
    r = harness.client.put("/v1/models/careful", headers=tenant.headers, json=config)
    assert r.status_code == 201, r.text
    assert r.json()["config"]["price_cached_in_per_mtok"] == "0.25"
    r = harness.client.put("/v1/models/cheap", headers=tenant.headers,
                           json={"provider": "sandbox", "price_cached_in_per_mtok": "0.1"})
    assert r.status_code == 422 and "price_cached_in_per_mtok needs" in r.json()["detail"]
