"""Deleting a chain's newest events (or all of them), or moving a chain head stored in the database back to
match, is detected: the heads are sealed with a key derived from the master key, which a database-only
attacker does not hold. Checked from the API (``/v1/runs/{id}/events/verify``, ``/v1/audit/verify``,
``/v1/admin/audit/verify``) and the CLI (``midwatch audit verify``), on SQLite and PostgreSQL; a tampered
head is not laundered by the next legitimate write; a master key rotation re-seals every intact head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from midwatch.audit_cli import audit_verify_command
from tenants.kit.db import unit_of_work
from tests.conftest import Harness, Tenant

DBS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SPEC = """\
apiVersion: midwatch/v1
name: steps
scope: {tools: [sandbox.echo]}
steps:
  - {id: a, tool: sandbox.echo, args: {x: 1}}
  - {id: b, tool: sandbox.echo, args: {x: 2}}
  - {id: c, tool: sandbox.echo, args: {x: 3}}
"""


def _sql(statement: str, **params: Any) -> Any:
    with unit_of_work() as session:
        return session.execute(text(statement), params).all() if statement.lstrip().startswith("SELECT") \
            else session.execute(text(statement), params)


def _finished_run(h: Harness, tenant: Tenant) -> str:
    run = h.submit(tenant, "steps", {"input": {}})
    assert h.wait_run(tenant, run["id"])["state"] == "succeeded"
    return str(run["id"])


def _verify(h: Harness, tenant: Tenant, run_id: str) -> dict[str, Any]:
    r = h.client.get(f"/v1/runs/{run_id}/events/verify", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _cli(tenant: Tenant, run_id: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = audit_verify_command(tenant.name, run_id)
    return code, capsys.readouterr().out


def _truncate(run_id: str, keep: int, *, move_head: bool) -> None:
    """The attacker deletes every event after ``keep`` and, optionally, moves the head to the new last event
    (whose hash anyone can read or recompute)."""
    _sql("DELETE FROM decision_events WHERE run_id = :r AND seq > :k", r=run_id, k=keep)
    if move_head:
        last = _sql("SELECT hash FROM decision_events WHERE run_id = :r AND seq = :k", r=run_id, k=keep)
        _sql("UPDATE runs SET event_seq = :k, event_head = :h WHERE id = :r", r=run_id, k=keep,
             h=last[0][0] if last else None)


@pytest.mark.parametrize("db", DBS)
def test_a_truncated_or_emptied_decision_log_and_a_rolled_back_head_fail_verification(
        make_harness: Callable[..., Harness], capsys: pytest.CaptureFixture[str], db: str) -> None:
    h = make_harness(db=db)
    tenant = h.onboard()
    h.put_agent(tenant, SPEC)
    intact, truncated, rolled_back, emptied, unsealed, copied = (_finished_run(h, tenant) for _ in range(6))
    total = _verify(h, tenant, intact)["events"]
    assert _verify(h, tenant, intact) == {"ok": True, "events": total, "first_bad_seq": None, "reason": ""}
    assert total >= 5 and _cli(tenant, intact, capsys)[0] == 0

    _truncate(truncated, total - 2, move_head=False)
    _truncate(rolled_back, total - 2, move_head=True)
    _truncate(emptied, 0, move_head=True)
    _truncate(unsealed, 0, move_head=True)
    _sql("UPDATE runs SET event_seal = NULL WHERE id = :r", r=unsealed)
    # another run's valid seal for the same head position does not fit this run
    _sql("UPDATE runs SET event_seal = (SELECT event_seal FROM runs WHERE id = :o) WHERE id = :r", o=intact,
         r=copied)

    cases = {truncated: ("chain truncated", total - 1), rolled_back: ("seal does not match", total - 1),
             emptied: ("seal does not match", 1), unsealed: ("not sealed", 1),
             copied: ("seal does not match", total + 1)}
    for run_id, (why, first_bad) in cases.items():
        verdict = _verify(h, tenant, run_id)
        assert not verdict["ok"] and why in verdict["reason"] and verdict["first_bad_seq"] == first_bad, \
            (run_id, verdict)
        code, out = _cli(tenant, run_id, capsys)
        assert code == 1 and f"BROKEN decision log of run {run_id}" in out and why in out, out
    assert _verify(h, tenant, intact)["ok"]


@pytest.mark.parametrize("db", DBS)
def test_a_rolled_back_head_is_not_laundered_by_the_run_continuing(make_harness: Callable[..., Harness],
                                                                  db: str) -> None:
    """The run is tampered with while it waits for an approval, then continues and writes sealed heads on
    top: it must not verify again (the engine seals nothing on top of a head whose seal does not hold)."""
    h = make_harness(db=db)
    tenant = h.onboard()
    h.put_agent(tenant, SPEC.replace("scope: {tools: [sandbox.echo]}\n", """\
scope: {tools: [sandbox.echo]}
autonomy:
  approvals: [{when: "step.id == 'c'", route: tenant-admin}]
"""))
    run = h.submit(tenant, "steps", {"input": {}})
    h.wait_run(tenant, run["id"], states=("waiting_approval",))
    seq = _verify(h, tenant, run["id"])["events"]
    _truncate(run["id"], seq - 1, move_head=True)  # hide that an approval was requested
    assert not _verify(h, tenant, run["id"])["ok"]
    approval = h.client.get(f"/v1/approvals?run_id={run['id']}", headers=tenant.headers).json()["data"][0]
    assert h.client.post(f"/v1/approvals/{approval['id']}/approve", headers=tenant.headers).status_code == 200
    assert h.wait_run(tenant, run["id"])["state"] == "succeeded"

    verdict = _verify(h, tenant, run["id"])
    assert not verdict["ok"] and "extended from a head whose seal did not hold" in verdict["reason"], verdict


@pytest.mark.parametrize("db", DBS)
def test_truncated_emptied_or_rolled_back_audit_chains_fail_verification(
        make_harness: Callable[..., Harness], capsys: pytest.CaptureFixture[str], db: str) -> None:
    h = make_harness(db=db, worker=None)
    intact, truncated, rolled_back, emptied = (h.onboard() for _ in range(4))
    for tenant in (intact, truncated, rolled_back, emptied):
        for role in ("viewer", "approver", "viewer"):
            assert h.client.post("/v1/keys", json={"role": role}, headers=tenant.headers).status_code == 201

    def audit(tenant: Tenant) -> dict[str, Any]:
        return dict(h.client.get("/v1/audit/verify", headers=tenant.headers).json())

    assert audit(intact) == {"ok": True, "events": 3, "first_bad_seq": None, "reason": ""}
    _sql("DELETE FROM audit_events WHERE tenant_key = :t AND seq = 3", t=truncated.id)
    _sql("DELETE FROM audit_events WHERE tenant_key = :t AND seq = 3", t=rolled_back.id)
    _sql("UPDATE audit_heads SET seq = 2, hash = (SELECT hash FROM audit_events WHERE tenant_key = :t AND seq = 2) "
         "WHERE tenant_key = :t", t=rolled_back.id)
    _sql("DELETE FROM audit_events WHERE tenant_key = :t", t=emptied.id)
    _sql("DELETE FROM audit_heads WHERE tenant_key = :t", t=emptied.id)

    for tenant, why in ((truncated, "chain truncated"), (rolled_back, "seal does not match"),
                        (emptied, "no head")):
        verdict = audit(tenant)
        assert not verdict["ok"] and why in verdict["reason"], (tenant.name, verdict)
        capsys.readouterr()
        assert audit_verify_command(tenant.name, None) == 1
        assert f"BROKEN audit chain of tenant {tenant.name}" in capsys.readouterr().out
    assert audit_verify_command(intact.name, None) == 0

    # the next legitimate append does not make a rolled-back or emptied chain whole again
    for tenant in (rolled_back, emptied):
        assert h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).status_code == 201
        verdict = audit(tenant)
        assert not verdict["ok"] and "did not hold" in verdict["reason"], (tenant.name, verdict)

    # the operator's platform chain too (shared by every test on PostgreSQL: put it back afterwards)
    from sqlalchemy import select
    from sqlalchemy.orm import make_transient

    from tenants.audit.models import AuditEvent, AuditHead

    assert h.client.get("/v1/admin/audit/verify", headers=h.op_headers).json()["ok"]
    with unit_of_work() as session:
        head = session.get(AuditHead, "platform")
        assert head is not None
        newest = session.scalar(select(AuditEvent).where(AuditEvent.tenant_key == "platform",
                                                         AuditEvent.seq == head.seq))
        saved = (head.seq, head.hash, head.seal)
        session.expunge_all()
    try:
        _sql("DELETE FROM audit_events WHERE tenant_key = 'platform' AND seq = :s", s=saved[0])
        _sql("UPDATE audit_heads SET seq = :p, hash = (SELECT hash FROM audit_events WHERE tenant_key = 'platform' "
             "AND seq = :p) WHERE tenant_key = 'platform'", p=saved[0] - 1)
        verdict = h.client.get("/v1/admin/audit/verify", headers=h.op_headers).json()
        assert not verdict["ok"] and "seal does not match" in verdict["reason"], verdict
    finally:
        with unit_of_work() as session:
            make_transient(newest)
            session.add(newest)
            session.flush()
            _sql_in = text("UPDATE audit_heads SET seq = :s, hash = :h, seal = :x WHERE tenant_key = 'platform'")
            session.execute(_sql_in, {"s": saved[0], "h": saved[1], "x": saved[2]})
    assert h.client.get("/v1/admin/audit/verify", headers=h.op_headers).json()["ok"]


def test_a_master_key_rotation_re_seals_every_intact_head(make_harness: Callable[..., Harness],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from midwatch.secrets_cli import rotate_master_key_command
    from tenants.kit.settings import reset_settings

    h = make_harness()
    tenant = h.onboard()
    h.put_agent(tenant, SPEC)
    runs = [_finished_run(h, tenant) for _ in range(2)]
    assert h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).status_code == 201
    _truncate(runs[1], 2, move_head=True)  # broken before the rotation: stays broken after it
    h.services.stop()
    h.services = None

    assert rotate_master_key_command(None) == 0
    out = capsys.readouterr().out
    assert "chain heads re-sealed under the new key" in out and f"run {runs[1]}" in out
    reset_settings()  # the restart with the new key
    assert audit_verify_command(None, runs[0]) == 0
    assert audit_verify_command(tenant.name, runs[1]) == 1


def test_seal_heads_seals_intact_chains_written_before_seals_and_leaves_broken_ones(
        make_harness: Callable[..., Harness], capsys: pytest.CaptureFixture[str]) -> None:
    """The upgrade path: heads written before sealing existed have no seal; ``midwatch audit seal-heads``
    seals those whose chain verifies (and opens an empty tenant chain), and leaves a broken one failing."""
    from midwatch.audit_cli import seal_heads_command

    h = make_harness(worker=None)
    old, quiet, tampered = h.onboard(), h.onboard(), h.onboard()
    for tenant in (old, tampered):
        assert h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).status_code == 201
    h.put_agent(old, SPEC)
    run = h.submit(old, "steps", {"input": {}})
    _sql("UPDATE runs SET event_seal = NULL")  # as written before the upgrade
    _sql("UPDATE audit_heads SET seal = NULL")
    _sql("DELETE FROM audit_heads WHERE tenant_key = :t", t=quiet.id)  # onboarded, never audited
    _sql("UPDATE audit_events SET target = 'forged' WHERE tenant_key = :t", t=tampered.id)
    capsys.readouterr()
    assert audit_verify_command(None, None) == 1

    assert seal_heads_command() == 1  # one chain was already broken: reported, left unsealed
    out = capsys.readouterr().out
    assert "empty chain(s) opened" in out and f"audit chain {tampered.id}" in out
    for tenant in (old, quiet):
        assert audit_verify_command(tenant.name, None) == 0
    assert audit_verify_command(old.name, run["id"]) == 0
    capsys.readouterr()
    assert audit_verify_command(tampered.name, None) == 1
    assert h.client.get("/v1/admin/audit/verify", headers=h.op_headers).json()["ok"]
