"""``midwatch audit verify``: intact chains exit 0; a row edited in the database exits 1 naming the break."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from midwatch.audit_cli import audit_verify_command
from tenants.kit.db import unit_of_work
from tests.conftest import Harness, simple_spec


def test_tampering_with_an_audit_row_or_a_decision_event_fails_verification(
        harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h = harness
    a, b = h.onboard(), h.onboard()
    for tenant in (a, b):
        assert h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).status_code == 201
        h.put_agent(tenant, simple_spec())
    run = h.submit(a, "greeter", {"input": {"customer": "ann", "amount": 1}})
    assert h.wait_run(a, run["id"])["state"] == "succeeded"

    assert audit_verify_command(None, None) == 0
    out = capsys.readouterr().out
    assert "audit verify ok" in out and "0 broken" in out
    assert audit_verify_command(a.name, run["id"]) == 0
    assert audit_verify_command("no-such-tenant", None) == 2
    assert audit_verify_command(None, "run_missing") == 2
    capsys.readouterr()

    with unit_of_work() as session:  # someone with database access hides who created a key
        session.execute(text("UPDATE audit_events SET actor = 'key_someone_else' WHERE tenant_id = :t AND seq = 1"),
                        {"t": a.id})
    assert audit_verify_command(None, None) == 1
    out = capsys.readouterr().out
    assert f"BROKEN audit chain of tenant {a.name}: first bad seq 1" in out
    assert f"tenant {b.name}" not in out  # the other tenant's chain is intact
    assert audit_verify_command(b.name, None) == 0
    capsys.readouterr()

    with unit_of_work() as session:  # and rewrites why the agent did what it did
        session.execute(text("UPDATE decision_events SET why = 'forged' WHERE run_id = :r AND seq = 2"),
                        {"r": run["id"]})
    assert audit_verify_command(a.name, run["id"]) == 1
    out = capsys.readouterr().out
    assert f"BROKEN decision log of run {run['id']} (tenant {a.name}): first bad seq 2" in out
