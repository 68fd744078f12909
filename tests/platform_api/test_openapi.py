"""The OpenAPI document says what the API does: every problem a route can answer, with its shape; request
bodies closed to unknown fields and with the patterns and bounds their models enforce; the bodies Litestar
cannot see (agent specs) and the ones a caller may leave out. ``tests/security/test_api_fuzz.py`` holds the
API to this document; these are the properties it relies on, checked directly."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from platform_api.app import create_app
from tenants.kit.settings import Settings

PROBLEM = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    with TestClient(create_app(Settings())) as client:
        return dict(client.get("/schema/openapi.json").json())


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()]


def test_every_guarded_operation_documents_its_problems_as_problem_json(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        if not path.startswith("/v1/"):  # health needs no key; /metrics its own token, when one is set
            assert op.get("security", [{}]) in ([{}], [{}, {"metrics": []}]), f"{method} {path}"
            continue
        assert op["security"] == [{"bearer": []}], f"{method} {path}"
        expected = {"401", "403", "429", "503"} | ({"404"} if "{" in path else set())
        for status in expected:
            content = op["responses"][status]["content"]
            assert content == {"application/problem+json": {"schema": PROBLEM}}, f"{method} {path} {status}"
    errors = [(f"{method} {path}", status, response) for method, path, op in _operations(document)
              for status, response in op["responses"].items() if int(status) >= 400]
    assert len(errors) > 300
    not_problems = [(where, status) for where, status, response in errors
                    if response.get("content") != {"application/problem+json": {"schema": PROBLEM}}]
    assert not not_problems, f"error responses documented in another shape: {not_problems}"
    assert set(document["components"]["schemas"]["Problem"]["required"]) >= {"type", "title", "status", "code",
                                                                             "detail"}


def test_routes_that_can_conflict_say_so(document: dict[str, Any]) -> None:
    for path, method in (("/v1/admin/tenants", "post"), ("/v1/secrets", "post"), ("/v1/agents/{name}/runs", "post"),
                         ("/v1/runs/{run_id}/cancel", "post"), ("/v1/keys/{key_id}/rotate", "post"),
                         ("/v1/approvals/{approval_id}/approve", "post")):
        assert "409" in document["paths"][path][method]["responses"], f"{method} {path}"
    assert "404" in document["paths"]["/v1/admin/audit"]["get"]["responses"]  # ?tenant= naming nobody


def test_request_bodies_are_closed_and_keep_their_patterns_and_bounds(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("CreateSecret", "CreateKey", "CreateTenant", "CreateWebhook", "LimitIn", "Decision", "SubmitRun"):
        assert schemas[name]["additionalProperties"] is False, name
    secret = schemas["CreateSecret"]["properties"]
    assert secret["name"]["pattern"] == "^[a-z][a-z0-9_-]{0,62}$"
    assert secret["grace_seconds"]["minimum"] == 0  # a zero bound, which Litestar alone leaves out
    assert schemas["CreateTenant"]["properties"]["name"]["pattern"]
    assert "run.failed" in schemas["CreateWebhook"]["properties"]["events"]["items"]["enum"]
    budget_limit = schemas["LimitIn"]["properties"]["limit"]["oneOf"]
    assert budget_limit[0]["pattern"] and budget_limit[1]["minimum"] == 0


def test_bodies_litestar_cannot_see_are_documented(document: dict[str, Any]) -> None:
    spec = document["paths"]["/v1/agents/{name}"]["put"]["requestBody"]
    assert spec["required"] is True and set(spec["content"]) == {"application/yaml", "application/json"}
    promote = document["paths"]["/v1/secrets/{name}/promote"]["post"]["requestBody"]
    assert promote["required"] is False  # data: JSONBody[PromoteSecret | None] = None
    cursor = next(p for p in document["paths"]["/v1/audit"]["get"]["parameters"] if p["name"] == "cursor")
    assert cursor["schema"]["oneOf"][0]["type"] == "integer" or cursor["schema"].get("type") == "integer", cursor
