"""The API fuzzed from its own OpenAPI document (schemathesis): whatever a caller sends, valid or not, the
API never answers 5xx, every error is ``application/problem+json`` with a stable ``code``, no body carries
SQL or a traceback, and every answer (status, content type, body, headers) is what the document says.

Every operation gets schemathesis' coverage phase (boundary and invalid values derived from the schema:
deterministic) and a few fuzzed examples (derandomized, so CI sees the same requests every run), sent
in-process to the app of a module-scoped harness: as a tenant admin (the operator for ``/v1/admin``), so
the role guard lets the request reach validation and the handler. Schemathesis' own checks add: a
request the document calls invalid must be refused (4xx), one it calls valid must not be refused as
invalid, and the auth it declares must be enforced. A request whose path names an object is sent a second
time naming the tenant's real object of that kind (a run, an approval, a secret with a staged value, ...),
so generated bodies and queries reach the handler's work, not only its 404.

Defects it found (each fixed, most with a direct test in ``tests/security/test_bad_input.py`` or
``tests/platform_api/test_openapi.py``): a 405 without ``Allow``; a budget-events cursor past the column's
range answered 500; a query parameter given twice was silently read once; the document listed no
problem responses (only Litestar's own 400 shape), lost every ``Field(pattern=...)`` and zero bound and left
request bodies open to unknown fields, showed no body for agent specs and required optional bodies, and
called public health routes authenticated.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response

from platform_api.app import create_app
from tenants.kit.settings import Settings
from tests.conftest import Harness, Tenant, batch_spec, simple_spec, spec

# Per operation, fuzzing phase (the coverage phase adds its own, schema-derived cases). CI's budget; a deeper
# local run: MIDWATCH_TEST_FUZZ_EXAMPLES=200 uv run pytest tests/security/test_api_fuzz.py
MAX_EXAMPLES = int(os.environ.get("MIDWATCH_TEST_FUZZ_EXAMPLES", "8"))
# Bodies whose validity is more than a JSON Schema can say: a spec is a program (steps, templates, rules),
# tools and models name hosts Midwatch refuses to reach (metadata, private), budget lines have cross-line
# rules (one line per metric and period; concurrent_runs has no period), webhooks too (hosts, at most 20).
# For these, "schema-valid" does not mean "accepted", so schemathesis' positive_data_acceptance is off;
# every other check (no 5xx, problem+json, invalid input refused, documented answers) still holds.
BEYOND_SCHEMA = ["PUT /v1/agents/{name}", "PUT /v1/tools/{name}", "PUT /v1/models/{alias}",
                 "PUT /v1/admin/tenants/{name}/budgets", "POST /v1/webhooks"]
CONFIG = schemathesis.Config.from_dict({
    "seed": 16,
    # Unknown query parameters are ignored, as by most HTTP APIs: not sent as "invalid" requests. NUL is
    # refused in every string by design (tests/security/test_bad_input.py). The key is the test's to send.
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                   "allow-extra-parameters": False, "allow-x00": False, "with-security-parameters": False},
    "phases": {"stateful": {"enabled": False}},
    "operations": [{"include-name": name, "checks": {"positive_data_acceptance": {"enabled": False}}}
                   for name in BEYOND_SCHEMA],
})
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", create_app(Settings()), config=CONFIG)

GATED = spec("gated", {"id": "pay", "tool": "sandbox.record", "args": {"amount": 1}},
             autonomy={"approvals": [{"when": "step.tool == 'sandbox.record'", "route": "approver"}]})
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
INTERNALS = re.compile(r'Traceback \(most recent call last\)|File "[^"]+\.py", line \d+|sqlalchemy|psycopg|sqlite3\.|'
                       r'\bSELECT\b[^"]{0,200}\bFROM\b|\bINSERT INTO\b|\bUPDATE\b[^"]{0,200}\bSET\b')  # SQL as emitted


def no_server_error(ctx: CheckContext, response: Response, case: Case) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"


def errors_are_problems(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every 4xx/5xx: problem+json whose ``code`` is a stable identifier and ``status`` the response's."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/problem+json"), f"{response.status_code} as {content_type!r}"
    body = response.json()
    assert isinstance(body, dict) and CODE.match(str(body.get("code", ""))), body
    assert body["status"] == response.status_code and body["type"] == f"urn:midwatch:error:{body['code']}", body


def no_internals(ctx: CheckContext, response: Response, case: Case) -> None:
    """No SQL text, driver names or traceback in any body."""
    found = INTERNALS.search(response.text or "")
    assert found is None, f"the body shows internals ({found.group(0)[:80]!r}): {response.text[:500]}"


@dataclass
class Fuzzed:
    """The harness, the keys the fuzzer calls with (the operator's is replaced if the fuzzer rotates it), and
    the tenant's real objects by path parameter, so generated bodies and queries also reach objects that exist."""

    h: Harness
    tenant_key: str
    operator_key: str
    objects: dict[str, str]

    def key_for(self, case: Case) -> str:
        return self.operator_key if case.path.startswith("/v1/admin") else self.tenant_key

    def real(self, case: Case) -> dict[str, Any]:
        """``case``'s path parameters naming the tenant's real objects (by resource and parameter name)."""
        resource = case.path.split("/")[2]  # /v1/<resource>/...
        return {name: self.objects.get(f"{resource}.{name}", self.objects.get(name, value))
                for name, value in (case.path_parameters or {}).items()}


@pytest.fixture(scope="module")
def fuzzed(module_harness: Harness) -> Fuzzed:
    """A tenant with an agent and a batch agent, a finished run, a pending approval, a tool, a model, a
    secret with a staged rotation, a webhook and a viewer key; another tenant for the
    operator's routes (the fuzzer may suspend it)."""
    h = module_harness
    t: Tenant = h.onboard()
    h.put_agent(t, simple_spec("greeter"))
    h.put_agent(t, batch_spec("batcher"))
    h.put_agent(t, GATED)
    run = h.submit(t, "batcher", {"items": [{"n": 1}, {"n": 2}]})["id"]
    gated = h.submit(t, "gated", {"input": None})["id"]
    h.wait_run(t, run)
    h.wait_run(t, gated, states=("waiting_approval",))
    approval = h.client.get(f"/v1/approvals?run_id={gated}", headers=t.headers).json()["data"][0]["id"]
    for method, url, body in (("PUT", "/v1/tools/crm.notes", {"url": "https://crm.example.com/n/{{ args.id }}"}),
                              ("PUT", "/v1/models/fast", {"provider": "sandbox"}),
                              ("POST", "/v1/secrets", {"name": "crm_token", "value": "first-value-1"}),
                              ("POST", "/v1/secrets/crm_token/rotate", {"value": "second-value-2"})):
        assert h.client.request(method, url, json=body, headers=t.headers).status_code in (200, 201)
    webhook = h.client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["run.failed"]},
                            headers=t.headers).json()["id"]
    viewer = h.client.post("/v1/keys", json={"role": "viewer"}, headers=t.headers).json()["id"]
    other = h.onboard()
    return Fuzzed(h=h, tenant_key=t.admin_key, operator_key=h.operator_key, objects={
        "agents.name": "greeter", "tools.name": "crm.notes", "models.alias": "fast", "secrets.name": "crm_token",
        "admin.name": other.name, "run_id": run, "approval_id": approval, "webhook_id": webhook, "key_id": viewer,
        "host": "crm.example.com", "version": "1", "item_index": "0"})


CHECKS = [no_server_error, errors_are_problems, no_internals]


@schema.parametrize()
def test_no_input_makes_the_api_fail_or_answer_off_its_document(case: Case, fuzzed: Fuzzed) -> None:
    """Each generated request, as generated (every check), then (but for deletes) with its path naming the
    tenant's real objects, so the body and query reach the handler's work (no 5xx, problem+json, no internals:
    the document's checks no longer apply to a request the test changed)."""
    app = fuzzed.h.client.app
    response = case.call_and_validate(headers={"Authorization": f"Bearer {fuzzed.key_for(case)}"}, app=app,
                                      additional_checks=CHECKS)
    _follow_operator_key(fuzzed, case, response)
    if case.path_parameters and case.method.upper() != "DELETE":
        case.path_parameters = fuzzed.real(case)
        response = case.call(headers={"Authorization": f"Bearer {fuzzed.key_for(case)}"}, app=app)
        for check in CHECKS:
            check(None, response, case)  # type: ignore[arg-type]


def _follow_operator_key(fuzzed: Fuzzed, case: Case, response: Response) -> None:
    if case.path == "/v1/admin/keys/rotate" and response.status_code == 201:
        fuzzed.operator_key = response.json()["key"]  # the old key may expire at once (grace 0)
