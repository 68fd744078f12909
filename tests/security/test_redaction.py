"""Secrets never leave the vault in clear. After a full flow that uses them (an HTTP tool with a bearer
token, another with an API-key header, a sandbox LLM step fed by the tool output, a 401 retried with the
pending value and escalated, an error page echoing the credentials), no plaintext is in the worker's log,
this process's log, any database row (the encrypted store aside), any API response or the OpenAPI schema.
The echoing error page makes the decision log's redaction do real work, not just the absence of logging."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from runner.sandbox_upstream import FaultyUpstream, html_200, ok, status
from tenants.kit.logging import REDACTED, configure_logging, redact, redact_processor, register_secret
from tests.conftest import Harness, Tenant

ENCRYPTED_COLUMNS = {("secret_versions", "ciphertext"), ("secret_versions", "nonce"),
                     ("secret_versions", "wrapped_key")}
INVOICE = {"amount": 120, "email": "billing@example.com"}


# ---- the processor on its own -------------------------------------------------------------------

def test_the_log_processor_redacts_known_values_bearer_headers_and_api_keys() -> None:
    value = f"registered-{secrets.token_hex(8)}"
    register_secret([value])
    api_key = f"mw_adm_{secrets.token_urlsafe(32)}"
    event = {
        "event": f"calling with {value} inside",
        "detail": {"headers": {"X-Trace": f"prefix:{value}"}, "items": [value, "harmless"]},
        "raw": "Authorization: Bearer abcdef0123456789.sig",
        "note": f"the caller used {api_key}",
        "api_key": "anything at all",
    }
    out = redact_processor(None, "info", dict(event))
    text = json.dumps(out)
    for leaked in (value, "abcdef0123456789", api_key, "anything at all"):
        assert leaked not in text, f"{leaked!r} survived: {text}"
    assert out["event"] == f"calling with {REDACTED} inside"
    assert out["detail"]["items"] == [REDACTED, "harmless"]  # the rest stays readable
    assert out["raw"] == f"Authorization: Bearer {REDACTED}"
    assert redact("nothing secret here") == "nothing secret here"


def test_configured_structlog_output_is_redacted() -> None:
    value = f"configured-{secrets.token_hex(8)}"
    stream = io.StringIO()
    configure_logging("debug", "json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream))
    try:
        register_secret([value])
        structlog.get_logger("t").info("resolved", what=f"value={value}", authorization=f"Bearer {value}")
    finally:
        configure_logging("warning", "console")
    line = json.loads(stream.getvalue())
    assert line["event"] == "resolved" and value not in stream.getvalue()
    assert line["what"] == f"value={REDACTED}" and line["authorization"] == REDACTED


# ---- end to end -----------------------------------------------------------------------------------

def _spec(up: FaultyUpstream) -> str:
    return f"""\
apiVersion: midwatch/v1
name: chaser
scope: {{tools: [crm.get_invoice, mail.lookup], egress: ["{up.netloc}"], secrets: [crm_token, mail_key]}}
steps:
  - id: fetch
    tool: crm.get_invoice
    args: {{id: "{{{{ input.id }}}}"}}
  - id: draft
    llm: {{model: sandbox, prompt: "Remind {{{{ steps.fetch.output.email }}}} of {{{{ steps.fetch.output.amount }}}}"}}
  - id: check
    tool: mail.lookup
    args: {{to: "{{{{ steps.fetch.output.email }}}}", text: "{{{{ steps.draft.output.text }}}}"}}
"""


def _tools(h: Harness, tenant: Tenant, up: FaultyUpstream) -> None:
    definitions = {
        "crm.get_invoice": {"method": "GET", "url": f"{up.url}/crm/invoices/{{{{ args.id }}}}", "timeout_s": 5,
                            "auth": {"type": "bearer", "secret": "crm_token"},
                            "retry": {"max_attempts": 2, "base_delay_s": 0.05, "max_delay_s": 0.1},
                            "response_schema": {"type": "object", "required": ["amount", "email"]}},
        "mail.lookup": {"method": "POST", "url": f"{up.url}/mail/lookup", "timeout_s": 5,
                        "auth": {"type": "header", "header": "X-Mail-Key", "secret": "mail_key"}},
    }
    for name, definition in definitions.items():
        r = h.client.put(f"/v1/tools/{name}", json=definition, headers=tenant.headers)
        assert r.status_code == 201, r.text


def _route_urls(h: Harness, tenant: Tenant, run_ids: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Every GET route of the app, filled with this flow's objects (routes with nothing to show are skipped)."""
    by_prefix = {"/v1/agents": ["chaser"], "/v1/tools": ["crm.get_invoice", "mail.lookup"],
                 "/v1/secrets": ["crm_token", "mail_key"], "/v1/admin/tenants": [tenant.name]}
    urls: list[tuple[str, dict[str, str]]] = []
    for route in h.client.app.routes:
        if "GET" not in route.methods or route.path.startswith(("/schema", "/metrics")):
            continue
        headers = h.op_headers if route.path.startswith("/v1/admin") else tenant.headers
        candidates = [route.path]
        for param, values in (("{run_id:str}", run_ids), ("{version:int}", ["1"])):
            candidates = [c.replace(param, v) for c in candidates for v in values] if param in "".join(
                candidates) else candidates
        if "{name:str}" in route.path:
            prefix = next((p for p in by_prefix if route.path.startswith(p)), None)
            candidates = [c.replace("{name:str}", v) for c in candidates for v in by_prefix.get(prefix or "", [])]
        urls.extend((c, headers) for c in candidates if "{" not in c)
    return urls


def _database_text() -> str:
    from sqlalchemy import select

    import tenants.models  # noqa: F401 - every table registered on Base.metadata
    from tenants.kit.db import Base, read_only

    parts: list[str] = []
    with read_only() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if (table.name, c.name) not in ENCRYPTED_COLUMNS]
            for row in session.execute(select(*columns)).all():
                for value in row:
                    binary = isinstance(value, bytes | memoryview)
                    parts.append(bytes(value).decode("latin-1") if binary else str(value))
    return "\n".join(parts)


@pytest.mark.postgres
@pytest.mark.redis
def test_no_secret_plaintext_in_logs_rows_responses_or_schema(make_harness: Callable[..., Harness],
                                                              upstream: FaultyUpstream, tmp_path: Path) -> None:
    h = make_harness(db="postgres", broker="redis", worker=None,
                     extra={"MIDWATCH_LOG_LEVEL": "debug", "MIDWATCH_LOG_FORMAT": "json"})
    worker_log = tmp_path / "redaction-worker.log"
    h.spawn("worker", log=worker_log)
    # this process's logs: structlog and the standard library, into one captured stream
    captured = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=captured))
    handler = logging.StreamHandler(captured)
    logging.getLogger().addHandler(handler)
    previous_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    bodies: list[str] = []

    def keep(response: Any) -> None:
        response.read()
        bodies.append(response.text)

    h.client.event_hooks = {"response": [keep]}
    try:
        plaintexts = _flow(h, upstream)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous_level)
        configure_logging("warning", "console")
        h.client.event_hooks = {"response": []}
        for proc in h.procs:
            proc.terminate()
            proc.wait(timeout=30)

    tenant, run_ids = plaintexts.pop("__tenant__"), plaintexts.pop("__runs__")
    assert isinstance(tenant, Tenant) and isinstance(run_ids, list)
    worker_text = worker_log.read_text()
    test_text = captured.getvalue()
    database = _database_text()
    openapi = h.client.get("/schema/openapi.json").text
    # the searches look where the secrets were used (else finding nothing would prove nothing)
    assert "secret_resolved" in worker_text, "the worker log did not capture the secret reads"
    assert "secret_created" in test_text and "secret_rotated" in test_text
    assert "billing@example.com" in database and '"paths"' in openapi
    assert any(run_ids[0] in b for b in bodies) and len(bodies) > 30

    places = {"worker log": worker_text, "test process log": test_text, "database rows": database,
              "OpenAPI schema": openapi, **{f"API response #{i}": b for i, b in enumerate(bodies)}}
    hits = [(label, where) for label, value in plaintexts.items() for where, text in places.items()
            if isinstance(value, str) and value in text]
    assert not hits, f"secret plaintext found: {hits}"


def _flow(h: Harness, up: FaultyUpstream) -> dict[str, Any]:
    """Run the flow; returns the plaintexts to search for (and the tenant and runs, under dunder keys)."""
    crm_token = f"crm-plain-{secrets.token_hex(12)}"
    crm_pending = f"crm-pending-{secrets.token_hex(12)}"
    mail_key = f"mailkey-plain-{secrets.token_hex(12)}"
    up.script("/crm/invoices/*", [ok(INVOICE)])
    up.script("/crm/invoices/INV-401", [status(401, {"error": "invalid_token"})])
    # a careless proxy that echoes the credentials in an error page: its first bytes land in the failure's reason
    up.script("/crm/invoices/INV-HTML", [html_200(f"<p>Bad gateway for Bearer {crm_token} (key {mail_key}, "
                                                   f"next {crm_pending})</p>")])
    up.script("/mail/lookup", [ok({"status": "deliverable"})])
    tenant = h.onboard()
    for name, value in (("crm_token", crm_token), ("mail_key", mail_key)):
        r = h.client.post("/v1/secrets", json={"name": name, "value": value}, headers=tenant.headers)
        assert r.status_code == 201, r.text
    _tools(h, tenant, up)
    h.put_agent(tenant, _spec(up))

    good = h.submit(tenant, "chaser", {"input": {"id": "INV-1"}})
    done = h.wait_run(tenant, good["id"], timeout=60)
    assert done["state"] == "succeeded", done
    # a staged rotation, then a call the upstream refuses: retried with the pending value, then escalated
    r = h.client.post("/v1/secrets/crm_token/rotate", json={"value": crm_pending}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    bad = h.submit(tenant, "chaser", {"input": {"id": "INV-401"}})
    failed = h.wait_run(tenant, bad["id"], timeout=60)
    assert failed["state"] == "escalated" and failed["failure_category"] == "auth", failed
    assert "crm_token" in failed["reason"]
    echoed = h.submit(tenant, "chaser", {"input": {"id": "INV-HTML"}})
    broken = h.wait_run(tenant, echoed["id"], timeout=60)
    assert broken["state"] == "escalated" and "Bad gateway for Bearer" in broken["reason"], broken

    # the secrets really went out, in the headers their tools declare
    sent = [(r.path, r.headers.get("authorization"), r.headers.get("x-mail-key")) for r in up.requests]
    assert ("/crm/invoices/INV-1", f"Bearer {crm_token}", None) in sent
    assert ("/crm/invoices/INV-401", f"Bearer {crm_pending}", None) in sent  # the one retry during rotation
    assert ("/mail/lookup", None, mail_key) in sent

    run_ids = [good["id"], bad["id"], echoed["id"]]
    urls = _route_urls(h, tenant, run_ids)
    swept = {u for u, _ in urls}
    assert {f"/v1/runs/{good['id']}/events", f"/v1/runs/{bad['id']}/items", "/v1/secrets/crm_token",
            "/v1/tools/mail.lookup", "/v1/approvals", "/v1/keys"} <= swept, sorted(swept)
    for url, headers in urls:
        r = h.client.get(url, headers=headers)
        assert r.status_code == 200, f"{url}: {r.text}"
    for run_id in run_ids:
        h.events(tenant, run_id)
    return {"crm_token": crm_token, "crm_token (pending)": crm_pending, "mail_key": mail_key,
            "__tenant__": tenant, "__runs__": run_ids}



@pytest.mark.parametrize("key", [
    "token", "access_token", "refresh_token", "id_token", "Authorization", "X-Api-Key", "api_key", "apiKey",
    "password", "db_password", "client_secret", "clientSecret", "secret", "private_key", "aws_secret_access_key",
    "Cookie", "Proxy-Authorization", "credentials", "signature",
])
def test_keys_that_name_a_credential_are_masked(key: str) -> None:
    from tenants.kit.logging import is_sensitive_key, redact

    assert is_sensitive_key(key)
    assert redact({key: "hunter2-value"}) == {key: "[REDACTED]"}


@pytest.mark.parametrize("key", [
    "input_tokens", "output_tokens", "max_tokens", "inputTokens", "tokens", "token_url", "token_count",
    "idempotency_key", "sort_key", "secrets", "keys", "author", "passed", "credit", "tokenizer",
])
def test_counts_and_names_that_merely_contain_a_word_stay_readable(key: str) -> None:
    from tenants.kit.logging import is_sensitive_key, redact

    assert not is_sensitive_key(key)
    assert redact({key: 1234}) == {key: 1234}


def test_a_value_mask_replaces_exact_secrets_anywhere_and_leaves_credential_looking_keys_alone() -> None:
    from tenants.kit.logging import ValueMask

    mask = ValueMask()
    value = {"headers": {"authorization": "Bearer s3cr3t/value+1"}, "s3cr3t/value+1": ["x s3cr3t/value+1 y"],
             "url": "https://h/cb?t=s3cr3t%2Fvalue%2B1", "token": "page-2", "n": 3}
    assert mask(value) == value  # nothing known yet
    mask.add("s3cr3t/value+1")
    mask.add("abc")  # too short to mask without garbling everything
    assert mask(value) == {"headers": {"authorization": f"Bearer {REDACTED}"}, REDACTED: [f"x {REDACTED} y"],
                           "url": f"https://h/cb?t={REDACTED}", "token": "page-2", "n": 3}
