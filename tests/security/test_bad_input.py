"""Bad input never reaches a 500: every malformed request gets its documented 4xx, a stable ``code``
and ``application/problem+json``, and no traceback in the body.

Decisions this table pins down (clients match on them):
- a query parameter outside its allowed values (``?state=bogus``, ``?limit=0``) is **422 validation_error**,
  like any other field that fails validation; 400 is kept for bodies that cannot be decoded at all
  (``malformed_json``);
- a NUL character is rejected everywhere (PostgreSQL cannot store or even compare one): in a path it
  names nothing (404 not_found), in a query or body it is 422;
- a version number or numeric cursor beyond its column's range names nothing (404) or is not a cursor (422).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Harness, Tenant, batch_spec, simple_spec

PROBLEM_JSON = "application/problem+json"
BIG = "x" * 3000  # over MIDWATCH_MAX_BODY_BYTES=2048 set below


@dataclass
class Ctx:
    """What the cases need: a tenant with a simple and a batch agent and one finished run."""

    h: Harness
    tenant: Tenant
    run_id: str
    viewer: str

    @property
    def auth(self) -> dict[str, str]:
        return self.tenant.headers

    @property
    def json_auth(self) -> dict[str, str]:
        return {**self.tenant.headers, "Content-Type": "application/json"}


@dataclass
class Case:
    name: str
    method: str
    path: str | Callable[[Ctx], str]
    request: Callable[[Ctx], dict[str, Any]]
    status: int
    code: str
    check: Callable[[dict[str, Any]], bool] = field(default=lambda _body: True)


def _spec_with(old: str, new: str) -> bytes:
    return simple_spec().replace(old, new, 1).encode()


def _error_paths(body: dict[str, Any]) -> list[str]:
    return [e.get("path") for e in body.get("errors", [])]


CASES: list[Case] = [
    # ---- bodies that cannot be decoded ---------------------------------------------------------
    Case("malformed JSON", "POST", "/v1/keys",
         lambda c: {"content": b'{"role": "viewer",', "headers": c.json_auth}, 400, "malformed_json"),
    Case("truncated JSON on run submission", "POST", "/v1/agents/greeter/runs",
         lambda c: {"content": b"{", "headers": c.json_auth}, 400, "malformed_json"),
    Case("body that is not UTF-8", "POST", "/v1/keys",
         lambda c: {"content": b'{"role": "\xff"}', "headers": c.json_auth}, 400, "malformed_json"),
    Case("JSON nested deeper than the decoder allows", "POST", "/v1/agents/greeter/runs",
         lambda c: {"content": b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", "headers": c.json_auth},
         400, "malformed_json"),
    Case("NaN is not JSON", "POST", "/v1/agents/greeter/runs",
         lambda c: {"content": b'{"input": {"amount": NaN}}', "headers": c.json_auth}, 400, "malformed_json"),
    # ---- bodies that decode but do not validate (the API is strict) ----------------------------
    Case("wrong type: a number for a string", "POST", "/v1/keys",
         lambda c: {"json": {"role": "viewer", "name": 5}, "headers": c.auth}, 422, "validation_error",
         lambda b: _error_paths(b) == ["name"]),
    Case("wrong type: a number for a string in another body", "POST", "/v1/admin/tenants",
         lambda c: {"json": {"name": "ok-name", "display_name": 1}, "headers": c.h.op_headers},
         422, "validation_error", lambda b: _error_paths(b) == ["display_name"]),
    Case("wrong type: an object for the items list", "POST", "/v1/agents/batcher/runs",
         lambda c: {"json": {"items": {"n": 1}}, "headers": c.auth}, 422, "validation_error",
         lambda b: _error_paths(b) == ["items"]),
    Case("unknown field", "POST", "/v1/keys",
         lambda c: {"json": {"role": "viewer", "admin": True}, "headers": c.auth}, 422, "validation_error",
         lambda b: _error_paths(b) == ["admin"]),
    Case("missing body", "POST", "/v1/keys", lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("JSON null body", "POST", "/v1/keys",
         lambda c: {"content": b"null", "headers": c.json_auth}, 422, "validation_error"),
    Case("non-object JSON (a list)", "POST", "/v1/keys",
         lambda c: {"json": [{"role": "viewer"}], "headers": c.auth}, 422, "validation_error"),
    Case("non-object JSON (a string)", "POST", "/v1/agents/greeter/runs",
         lambda c: {"json": "hello", "headers": c.auth}, 422, "validation_error"),
    Case("oversized body", "POST", "/v1/keys",
         lambda c: {"json": {"role": "viewer", "name": BIG}, "headers": c.auth}, 413, "payload_too_large"),
    Case("oversized spec", "PUT", "/v1/agents/greeter",
         lambda c: {"content": simple_spec().encode() + b"#" * 3000, "headers": c.auth}, 413, "payload_too_large"),
    Case("oversized run submission (its own limit)", "POST", "/v1/agents/batcher/runs",
         lambda c: {"json": {"items": [{"n": 1, "pad": BIG}] * 6}, "headers": c.auth}, 413, "payload_too_large"),
    Case("NUL character in a body string", "POST", "/v1/keys",
         lambda c: {"json": {"role": "viewer", "name": "a\x00b"}, "headers": c.auth}, 422, "validation_error"),
    Case("NUL character in a run input key", "POST", "/v1/agents/greeter/runs",
         lambda c: {"json": {"input": {"cust\x00omer": "a"}}, "headers": c.auth}, 422, "validation_error"),
    # ---- authentication and roles --------------------------------------------------------------
    Case("missing Authorization", "GET", "/v1/runs", lambda c: {}, 401, "unauthorized"),
    Case("garbled Authorization (no token)", "GET", "/v1/runs",
         lambda c: {"headers": {"Authorization": "Bearer"}}, 401, "unauthorized"),
    Case("wrong scheme", "GET", "/v1/runs",
         lambda c: {"headers": {"Authorization": f"Basic {c.tenant.admin_key}"}}, 401, "unauthorized"),
    Case("unknown key", "GET", "/v1/runs",
         lambda c: {"headers": {"Authorization": "Bearer mw_adm_not-a-real-key"}}, 401, "unauthorized"),
    Case("bad role value", "POST", "/v1/keys",
         lambda c: {"json": {"role": "superuser"}, "headers": c.auth}, 422, "validation_error",
         lambda b: _error_paths(b) == ["role"]),
    Case("tenant keys cannot be operators", "POST", "/v1/keys",
         lambda c: {"json": {"role": "operator"}, "headers": c.auth}, 422, "validation_error"),
    Case("viewer cannot create keys", "POST", "/v1/keys",
         lambda c: {"json": {"role": "viewer"}, "headers": {"Authorization": f"Bearer {c.viewer}"}},
         403, "forbidden"),
    # ---- tenants -------------------------------------------------------------------------------
    Case("invalid tenant name", "POST", "/v1/admin/tenants",
         lambda c: {"json": {"name": "Not A Slug!"}, "headers": c.h.op_headers}, 422, "validation_error"),
    Case("duplicate tenant", "POST", "/v1/admin/tenants",
         lambda c: {"json": {"name": c.tenant.name}, "headers": c.h.op_headers}, 409, "conflict"),
    Case("suspend a missing tenant", "POST", "/v1/admin/tenants/no-such-tenant/suspend",
         lambda c: {"headers": c.h.op_headers}, 404, "not_found"),
    # ---- agent specs ---------------------------------------------------------------------------
    Case("spec YAML syntax error", "PUT", "/v1/agents/greeter",
         lambda c: {"content": b"name: [greeter", "headers": c.auth}, 422, "spec_invalid",
         lambda b: bool(b["errors"]) and all("path" in e and e["message"] for e in b["errors"])),
    Case("spec with an unknown field", "PUT", "/v1/agents/greeter",
         lambda c: {"content": simple_spec().encode() + b"colour: blue\n", "headers": c.auth}, 422, "spec_invalid",
         lambda b: "colour" in _error_paths(b)),
    Case("spec tool not in scope", "PUT", "/v1/agents/greeter",
         lambda c: {"content": _spec_with("tools: [sandbox.echo, sandbox.record]", "tools: [sandbox.echo]"),
                    "headers": c.auth}, 422, "spec_invalid", lambda b: "steps[2].tool" in _error_paths(b)),
    Case("spec name differs from the URL's", "PUT", "/v1/agents/other-name",
         lambda c: {"content": simple_spec().encode(), "headers": c.auth}, 422, "spec_invalid",
         lambda b: "name" in _error_paths(b)),
    Case("spec: '5' for an integer field (strict)", "PUT", "/v1/agents/greeter",
         lambda c: {"content": _spec_with("scope:", "autonomy: {max_steps: '5'}\nscope:"), "headers": c.auth},
         422, "spec_invalid", lambda b: "autonomy.max_steps" in _error_paths(b)),
    Case("spec that is a list, not a mapping", "PUT", "/v1/agents/greeter",
         lambda c: {"content": b"- a\n- b\n", "headers": c.auth}, 422, "spec_invalid"),
    Case("spec with a NUL character (YAML escape)", "PUT", "/v1/agents/greeter",
         lambda c: {"content": _spec_with("name: greeter", 'name: greeter\ndescription: "a\\0b"'),
                    "headers": c.auth}, 422, "spec_invalid", lambda b: "description" in _error_paths(b)),
    Case("spec with a malformed sandbox model script", "PUT", "/v1/agents/greeter",
         lambda c: {"content": _spec_with("llm: {model: sandbox,", "llm: {model: sandbox, sandbox: {turns: [{}]},"),
                    "headers": c.auth}, 422, "spec_invalid", lambda b: "steps[1].llm.sandbox" in _error_paths(b)),
    Case("empty spec", "PUT", "/v1/agents/greeter", lambda c: {"content": b"  ", "headers": c.auth},
         422, "validation_error"),
    Case("tool args_schema that is not a JSON schema", "PUT", "/v1/tools/crm.note",
         lambda c: {"json": {"url": "https://crm.example.com/n", "args_schema": {"type": "object", "properties": {
             "a": {"type": "strng"}}}}, "headers": c.auth}, 422, "validation_error",
         lambda b: _error_paths(b) == ["args_schema"]),
    Case("version 0 does not exist", "GET", "/v1/agents/greeter/versions/0",
         lambda c: {"headers": c.auth}, 404, "not_found"),
    Case("version beyond the column's range", "GET", "/v1/agents/greeter/versions/99999999999999999999",
         lambda c: {"headers": c.auth}, 404, "not_found"),
    Case("version that is not a number", "GET", "/v1/agents/greeter/versions/latest",
         lambda c: {"headers": c.auth}, 404, "not_found"),
    # ---- runs ----------------------------------------------------------------------------------
    Case("run for a missing agent", "POST", "/v1/agents/no-such-agent/runs",
         lambda c: {"json": {"input": {}}, "headers": c.auth}, 404, "not_found"),
    Case("batch agent without items", "POST", "/v1/agents/batcher/runs",
         lambda c: {"json": {"input": {"n": 1}}, "headers": c.auth}, 422, "validation_error",
         lambda b: b.get("field") == "items"),
    Case("single-input agent given items", "POST", "/v1/agents/greeter/runs",
         lambda c: {"json": {"items": [{}]}, "headers": c.auth}, 422, "validation_error"),
    Case("items failing the input schema", "POST", "/v1/agents/batcher/runs",
         lambda c: {"json": {"items": [{"n": 1}, {"n": "two"}]}, "headers": c.auth}, 422, "validation_error",
         lambda b: b.get("field") == "items[1]['n']"),
    Case("'1' for an integer in an item (strict schema)", "POST", "/v1/agents/batcher/runs",
         lambda c: {"json": {"items": [{"n": "1"}]}, "headers": c.auth}, 422, "validation_error",
         lambda b: b.get("field") == "items[0]['n']"),
    Case("too many items", "POST", "/v1/agents/batcher/runs",
         lambda c: {"json": {"items": [{"n": i} for i in range(6)]}, "headers": c.auth}, 422, "validation_error",
         lambda b: "too many items" in b["detail"]),
    Case("invalid state filter", "GET", "/v1/runs?state=bogus",
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("invalid item state filter", "GET", lambda c: f"/v1/runs/{c.run_id}/items?state=bogus",
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("limit out of range", "GET", "/v1/runs?limit=0", lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("limit that is not a number", "GET", "/v1/runs?limit=ten",
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("bad cursor (not a number)", "GET", lambda c: f"/v1/runs/{c.run_id}/events?cursor=abc",
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("bad cursor (beyond the column's range)", "GET", lambda c: f"/v1/runs/{c.run_id}/items?cursor={10**12}",
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("bad cursor (too long)", "GET", "/v1/runs?cursor=" + "z" * 101,
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("bad sandbox cursor", "GET", "/v1/sandbox/records?cursor=-1",
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("budget events cursor beyond the column's range", "GET", "/v1/budgets/events?cursor=" + "9" * 20,
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("violations cursor beyond the column's range", "GET", "/v1/security/violations?cursor=" + "9" * 19,
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("a query parameter given twice", "GET", "/v1/runs?limit=1&limit=500",
         lambda c: {"headers": c.auth}, 422, "validation_error", lambda b: b.get("field") == "limit"),
    Case("NUL character in a query", "GET", "/v1/runs?agent=a%00b",
         lambda c: {"headers": c.auth}, 422, "validation_error"),
    Case("NUL character in a path", "GET", "/v1/runs/run%00x", lambda c: {"headers": c.auth}, 404, "not_found"),
    Case("Idempotency-Key reused with a different body", "POST", "/v1/agents/greeter/runs",
         lambda c: {"json": {"input": {"customer": "someone-else", "amount": 1}},
                    "headers": {**c.auth, "Idempotency-Key": "first-submission"}}, 409, "idempotency_conflict"),
    Case("empty Idempotency-Key", "POST", "/v1/agents/greeter/runs",
         lambda c: {"json": {"input": {}}, "headers": {**c.auth, "Idempotency-Key": ""}}, 422, "validation_error"),
    Case("Idempotency-Key with control characters", "POST", "/v1/agents/greeter/runs",
         lambda c: {"json": {"input": {}}, "headers": {**c.auth, "Idempotency-Key": "a\tb"}},
         422, "validation_error"),
    Case("cancel a finished run", "POST", lambda c: f"/v1/runs/{c.run_id}/cancel",
         lambda c: {"headers": c.auth}, 409, "conflict", lambda b: b.get("state") == "succeeded"),
    Case("resume a succeeded run", "POST", lambda c: f"/v1/runs/{c.run_id}/resume",
         lambda c: {"headers": c.auth}, 409, "conflict"),
    Case("cancel a missing run", "POST", "/v1/runs/run_missing/cancel",
         lambda c: {"headers": c.auth}, 404, "not_found"),
    Case("revoke a missing key", "DELETE", "/v1/keys/key_missing", lambda c: {"headers": c.auth}, 404, "not_found"),
    # ---- routing -------------------------------------------------------------------------------
    Case("unknown route", "GET", "/v1/nothing-here", lambda c: {"headers": c.auth}, 404, "not_found"),
    Case("wrong method", "DELETE", "/v1/runs", lambda c: {"headers": c.auth}, 405, "method_not_allowed"),
    Case("wrong method on an item", "PUT", lambda c: f"/v1/runs/{c.run_id}", lambda c: {"headers": c.auth},
         405, "method_not_allowed"),
]


def _context(h: Harness) -> Ctx:
    tenant = h.onboard()
    h.put_agent(tenant, simple_spec())
    h.put_agent(tenant, batch_spec())
    run = h.submit(tenant, "greeter", {"input": {"customer": "ann@example.com", "amount": 5}},
                   key="first-submission")
    assert h.wait_run(tenant, run["id"])["state"] == "succeeded"
    r = h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return Ctx(h=h, tenant=tenant, run_id=run["id"], viewer=r.json()["key"])


def _check(ctx: Ctx, case: Case) -> str | None:
    """None if the case answered as documented, else what went wrong."""
    path = case.path(ctx) if callable(case.path) else case.path
    r = ctx.h.client.request(case.method, path, **case.request(ctx))
    problems = []
    if r.status_code != case.status:
        problems.append(f"status {r.status_code} != {case.status}")
    if not r.headers.get("content-type", "").startswith(PROBLEM_JSON):
        problems.append(f"content-type {r.headers.get('content-type')!r}")
    if "Traceback" in r.text or 'File "' in r.text:
        problems.append("a traceback in the body")
    try:
        body = json.loads(r.text)
    except ValueError:
        return f"{case.name}: body is not JSON: {r.text[:200]!r}"
    if body.get("code") != case.code:
        problems.append(f"code {body.get('code')!r} != {case.code!r}")
    if body.get("status") != r.status_code or not body.get("type", "").startswith("urn:midwatch:error:"):
        problems.append("not a problem document")
    if not problems and not case.check(body):
        problems.append("detail check failed")
    return f"{case.name}: {'; '.join(problems)} -> {r.text[:300]}" if problems else None


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_every_malformed_request_gets_its_documented_problem(make_harness: Callable[..., Harness],
                                                            db: str) -> None:
    h = make_harness(db=db, extra={"MIDWATCH_MAX_BODY_BYTES": "2048", "MIDWATCH_MAX_RUN_BODY_BYTES": "16384",
                                   "MIDWATCH_MAX_BATCH_ITEMS": "5"})
    ctx = _context(h)
    assert len(CASES) >= 20
    failures = [f for f in (_check(ctx, case) for case in CASES) if f]
    assert not failures, "\n".join(failures)
    # the failed submissions stored nothing: still only the one run
    runs = h.client.get("/v1/runs", headers=ctx.auth).json()["data"]
    assert [r["id"] for r in runs] == [ctx.run_id]


def test_the_same_idempotency_key_with_other_items_is_a_conflict(harness: Harness) -> None:
    tenant = harness.onboard()
    harness.put_agent(tenant, batch_spec())
    first = harness.submit(tenant, "batcher", {"items": [{"n": 1}]}, key="batch-1")
    again = harness.client.post("/v1/agents/batcher/runs", json={"items": [{"n": 1}]},
                                headers={**tenant.headers, "Idempotency-Key": "batch-1"})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    other = harness.client.post("/v1/agents/batcher/runs", json={"items": [{"n": 2}]},
                                headers={**tenant.headers, "Idempotency-Key": "batch-1"})
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "idempotency_conflict" and other.json()["run_id"] == first["id"]


def test_a_wrong_method_is_answered_with_the_methods_the_route_allows(harness: Harness) -> None:
    """RFC 9110: a 405 carries ``Allow`` (the problem+json handler once dropped it)."""
    tenant = harness.onboard()
    for method, path, allowed in (("TRACE", "/healthz", {"GET"}), ("DELETE", "/v1/runs", {"GET"}),
                                  ("PATCH", "/v1/secrets/x", {"GET", "DELETE"})):
        r = harness.client.request(method, path, headers=tenant.headers)
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed", r.text
        assert allowed <= {m.strip() for m in r.headers["allow"].split(",")}, r.headers.get("allow")
