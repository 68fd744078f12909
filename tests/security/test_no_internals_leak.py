"""No API response carries SQL text or a traceback (issue 16, item 8): the tool that caused one works, and
whatever reason was stored from an exception is served scrubbed."""

from __future__ import annotations

from typing import Any

from runner.sandbox_upstream import FaultyUpstream, html_200, ok
from tenants.kit.db import unit_of_work
from tenants.kit.errors import public_reason, scrub_reason
from tests.conftest import Harness, spec

LEAKY = ("[SQL:", "INSERT INTO", "Traceback", "[parameters:", 'File "')


def _spec(up: FaultyUpstream) -> str:
    return f"""\
apiVersion: midwatch/v1
name: any-type
scope: {{tools: [page.get, data.get], egress: ["{up.netloc}"]}}
steps:
  - {{id: page, tool: page.get}}
  - {{id: data, tool: data.get}}
"""


def test_a_tool_without_an_expected_content_type_succeeds_with_text_and_json(harness: Harness,
                                                                             upstream: FaultyUpstream) -> None:
    upstream.script("/page", [html_200("<p>hello</p>")])
    upstream.script("/data", [ok({"n": 1})])
    tenant = harness.onboard()
    for name, path in (("page.get", "/page"), ("data.get", "/data")):
        r = harness.client.put(f"/v1/tools/{name}", headers=tenant.headers,
                               json={"url": f"{upstream.url}{path}", "expect_content_type": None})
        assert r.status_code == 201, r.text
    harness.put_agent(tenant, _spec(upstream))
    run = harness.submit(tenant, "any-type", {"input": None})
    done = harness.wait_run(tenant, run["id"])
    assert done["state"] == "succeeded", done
    outputs = {e["step_id"]: e for e in harness.events(tenant, run["id"]) if e["kind"] == "step.succeeded"}
    assert set(outputs) == {"page", "data"}


def test_a_reason_stored_from_a_database_exception_is_served_without_sql(harness: Harness) -> None:
    from sqlalchemy import update

    from tenants.runs.models import Run, RunItem

    tenant = harness.onboard()
    harness.put_agent(tenant, spec("one", {"id": "a", "tool": "sandbox.echo"}))
    run = harness.submit(tenant, "one", {"input": None})
    harness.wait_run(tenant, run["id"])
    stored = ("internal error: StatementError: (builtins.TypeError) Object of type bytes is not JSON serializable\n"
              "[SQL: INSERT INTO checkpoints (run_id, output) VALUES (?, ?)]\n[parameters: ('run_1', b'secret')]\n"
              'Traceback (most recent call last):\n  File "/app/runner/engine/_execute.py", line 249, in run')
    with unit_of_work() as session:
        session.execute(update(Run).where(Run.id == run["id"]).values(reason=stored, state="failed"))
        session.execute(update(RunItem).where(RunItem.run_id == run["id"]).values(reason=stored))
    bodies: list[Any] = [harness.client.get(f"/v1/runs/{run['id']}", headers=tenant.headers),
                         harness.client.get(f"/v1/runs/{run['id']}/items", headers=tenant.headers),
                         harness.client.get("/v1/runs", headers=tenant.headers)]
    for r in bodies:
        assert r.status_code == 200, r.text
        assert not any(marker in r.text for marker in LEAKY), r.text
    assert "Object of type bytes is not JSON serializable" in bodies[0].json()["reason"]


def test_public_reason_keeps_the_type_and_drops_the_statement() -> None:
    from sqlalchemy.exc import IntegrityError

    exc = IntegrityError("INSERT INTO runs VALUES (?)", ("x",), Exception("UNIQUE constraint failed"))
    assert public_reason(exc) == "IntegrityError: a database error (details in the operator's logs)"
    assert public_reason(ValueError("bad value")) == "ValueError: bad value"
    assert scrub_reason("ok\nDETAIL: Key (email)=(ann@example.com) already exists.") == (
        "ok [internal details removed; see the operator's logs]")
    assert scrub_reason(None) is None and scrub_reason("plain") == "plain"
