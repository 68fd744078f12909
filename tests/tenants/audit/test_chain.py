"""The audit trail's hash chain: appends verify, every kind of tampering is caught at the first bad seq,
and concurrent appends to one tenant's chain never fork it (PostgreSQL, 20 threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from tenants.audit.service import record, verify
from tenants.kit.db import unit_of_work
from tests.conftest import Harness

DBS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _append(tenant_id: str | None, n: int) -> None:
    with unit_of_work() as session:
        for i in range(n):
            record(session, tenant_id, actor="key_test", role="tenant-admin", action="key.created",
                   target=f"key_{i}", details={"i": i, "token": "hunter2-very-secret"})


def _sql(statement: str, **params: object) -> None:
    with unit_of_work() as session:
        session.execute(text(statement), params)


@pytest.mark.parametrize("db", DBS)
def test_appended_events_form_a_verifiable_chain_per_tenant_and_platform(make_harness: Callable[..., Harness],
                                                                          db: str) -> None:
    h = make_harness(db=db, worker=None)
    a, b = h.onboard(), h.onboard()
    _append(a.id, 5)
    _append(b.id, 2)
    with unit_of_work() as session:
        assert verify(session, a.id).to_dict() == {"ok": True, "events": 5, "first_bad_seq": None, "reason": ""}
        assert verify(session, b.id).events == 2
        assert verify(session, None).ok  # the platform chain (onboarding by the operator)
        details = session.execute(text("SELECT details FROM audit_events WHERE tenant_id = :t ORDER BY seq"),
                                  {"t": a.id}).scalars().first()
    assert "hunter2" not in str(details)  # credential-looking keys are redacted before hashing


@pytest.mark.parametrize("db", DBS)
def test_edited_deleted_reordered_or_truncated_events_are_detected_at_the_first_bad_seq(
        make_harness: Callable[..., Harness], db: str) -> None:
    h = make_harness(db=db, worker=None)
    edited, deleted, reordered, truncated = (h.onboard() for _ in range(4))
    for t in (edited, deleted, reordered, truncated):
        _append(t.id, 6)

    _sql("UPDATE audit_events SET target = 'key_forged' WHERE tenant_id = :t AND seq = 3", t=edited.id)
    _sql("DELETE FROM audit_events WHERE tenant_id = :t AND seq = 4", t=deleted.id)
    _sql("UPDATE audit_events SET seq = -1 WHERE tenant_id = :t AND seq = 2", t=reordered.id)
    _sql("UPDATE audit_events SET seq = 2 WHERE tenant_id = :t AND seq = 5", t=reordered.id)
    _sql("UPDATE audit_events SET seq = 5 WHERE tenant_id = :t AND seq = -1", t=reordered.id)
    _sql("DELETE FROM audit_events WHERE tenant_id = :t AND seq = 6", t=truncated.id)

    with unit_of_work() as session:
        v = verify(session, edited.id)
        assert (v.ok, v.first_bad_seq, v.reason) == (False, 3, "event content does not match its hash")
        v = verify(session, deleted.id)
        assert (v.ok, v.first_bad_seq) == (False, 4) and "sequence gap" in v.reason
        v = verify(session, reordered.id)
        assert (v.ok, v.first_bad_seq) == (False, 2)
        v = verify(session, truncated.id)
        assert (v.ok, v.first_bad_seq) == (False, 6) and "truncated" in v.reason


@pytest.mark.postgres
def test_twenty_concurrent_appends_on_postgres_keep_one_unforked_chain(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(db="postgres", worker=None)
    tenant = h.onboard()
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            with unit_of_work() as session:
                record(session, tenant.id, actor=f"key_{i}", role="tenant-admin", action="run.submitted",
                       target=f"run_{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    with unit_of_work() as session:
        assert verify(session, tenant.id).to_dict() == {"ok": True, "events": 20, "first_bad_seq": None,
                                                        "reason": ""}
        actors = session.execute(text("SELECT actor FROM audit_events WHERE tenant_id = :t"),
                                 {"t": tenant.id}).scalars().all()
    assert sorted(actors) == sorted(f"key_{i}" for i in range(20))
