"""A secret an upstream echoes never reaches a viewer. The finding: a bearer-authenticated tool whose upstream
echoes the request headers put the token into the step's output; a later ``sandbox.record`` step stored it and
a viewer key read it from ``/v1/sandbox/records``. Now every secret value resolved for the run is masked by
value in step outputs before they are stored, templated into later steps, recorded or returned: after the
flow, no API response a viewer can read and no database row (the encrypted vault aside) holds the token.
The API runs in this process and the worker in another, as in production, so nothing here is masked merely
because this process happened to resolve the secret."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.sandbox_upstream import FaultyUpstream, echo_headers
from tenants.kit.logging import REDACTED
from tests.conftest import Harness, Tenant
from tests.security.test_redaction import _database_text, _route_urls

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _setup(h: Harness, up: FaultyUpstream, spec: str) -> tuple[Tenant, str, Tenant]:
    token = f"crm-echoed-{secrets.token_hex(12)}"
    up.script("/whoami", [echo_headers()])
    tenant = h.onboard()
    r = h.client.post("/v1/secrets", json={"name": "crm_token", "value": token}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    r = h.client.put("/v1/tools/crm.whoami", headers=tenant.headers, json={
        "method": "GET", "url": f"{up.url}/whoami", "auth": {"type": "bearer", "secret": "crm_token"},
        "timeout_s": 5})
    assert r.status_code == 201, r.text
    h.put_agent(tenant, spec)
    viewer_key = h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["key"]
    return tenant, token, Tenant(name=tenant.name, id=tenant.id, admin_key=viewer_key)


def _viewer_reads(h: Harness, viewer: Tenant, run_id: str) -> list[str]:
    """Every GET a viewer may make about this flow, and every page of the run's events."""
    bodies = []
    for url, headers in _route_urls(h, viewer, [run_id]):
        if url.startswith("/v1/admin"):
            continue
        r = h.client.get(url, headers=headers)
        if r.status_code == 200:
            bodies.append(r.text)
    bodies.append(json.dumps(h.events(viewer, run_id)))
    return bodies


def test_an_echoed_bearer_token_is_masked_in_outputs_records_events_and_rows(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path) -> None:
    h = make_harness(db="postgres", broker="redis", worker=None)
    h.spawn("worker", log=tmp_path / "worker.log")
    tenant, token, viewer = _setup(h, upstream, f"""\
apiVersion: midwatch/v1
name: echoer
scope: {{tools: [crm.whoami, sandbox.record], egress: ["{upstream.netloc}"], secrets: [crm_token]}}
steps:
  - id: whoami
    tool: crm.whoami
    args: {{}}
  - id: draft
    llm: {{model: sandbox, prompt: "We were let in with {{{{ steps.whoami.output.headers.authorization }}}}"}}
  - id: keep
    tool: sandbox.record
    args: {{auth: "{{{{ steps.whoami.output.headers.authorization }}}}", text: "{{{{ steps.draft.output.text }}}}"}}
""")
    run = h.submit(tenant, "echoer", {"input": {}})
    done = h.wait_run(tenant, run["id"], timeout=60)
    assert done["state"] == "succeeded", done

    # the upstream really received the token, and really echoed it back
    assert upstream.requests_to("/whoami")[0].headers["authorization"] == f"Bearer {token}"
    assert token in upstream.responses_to("/whoami")[0].body.decode()
    records = h.client.get("/v1/sandbox/records", headers=viewer.headers).json()["data"]
    assert len(records) == 1
    assert records[0]["args"]["auth"] == f"Bearer {REDACTED}", records  # masked where it was echoed, not dropped
    assert REDACTED in records[0]["args"]["text"]

    places = {f"viewer response #{i}": body for i, body in enumerate(_viewer_reads(h, viewer, run["id"]))}
    places["database rows"] = _database_text()
    assert any(run["id"] in text for text in places.values())
    leaks = [where for where, text in places.items() if token in text]
    assert not leaks, f"the echoed token is readable in {leaks}"


def test_a_tool_result_inside_an_agent_loop_is_masked_before_the_model_and_the_loop_checkpoint(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path) -> None:
    h = make_harness(db="postgres", broker="redis", worker=None)
    h.spawn("worker", log=tmp_path / "worker.log")
    turns = [{"tool_calls": [{"name": "crm.whoami", "arguments": {}}]}, {"final": {"status": "done"}}]
    tenant, token, viewer = _setup(h, upstream, f"""\
apiVersion: midwatch/v1
name: looper
scope: {{tools: [crm.whoami], egress: ["{upstream.netloc}"], secrets: [crm_token]}}
steps:
  - id: work
    agent:
      model: sandbox
      prompt: "Find out who we are"
      tools: [crm.whoami]
      max_iterations: 3
      sandbox: {{turns: {json.dumps(turns)}}}
""")
    run = h.submit(tenant, "looper", {"input": {}})
    assert h.wait_run(tenant, run["id"], timeout=60)["state"] == "succeeded"
    assert upstream.requests_to("/whoami")[0].headers["authorization"] == f"Bearer {token}"

    database = _database_text()
    assert f"Bearer {REDACTED}" in database  # the loop call's stored output, masked
    leaks = [where for where, text in {"database rows": database, **{
        f"viewer response #{i}": b for i, b in enumerate(_viewer_reads(h, viewer, run["id"]))}}.items()
             if token in text]
    assert not leaks, f"the echoed token is readable in {leaks}"
