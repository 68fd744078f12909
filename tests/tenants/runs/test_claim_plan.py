"""The claim reads the chosen queue through the dispatch index (ix_runs_runnable), in index order, even on a
table PostgreSQL has no statistics for yet (a new deployment, a new schema): before the idempotency index was
partial, the planner read and sorted every run of the tenant through it, three times the claim's cost."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from tenants.kit.db import RawStatement, execute_raw, read_only, unit_of_work
from tenants.kit.ids import utcnow
from tenants.runs.dispatch import _claim_sql
from tests.conftest import Harness

SPEC = "apiVersion: midwatch/v1\nname: q\nscope: {tools: [sandbox.echo]}\nsteps:\n  - {id: s, tool: sandbox.echo}\n"


def _scans(node: dict[str, Any]) -> Iterator[tuple[str, str | None, str | None]]:
    yield node["Node Type"], node.get("Relation Name"), node.get("Index Name")
    for child in node.get("Plans", ()):
        yield from _scans(child)


@pytest.mark.postgres
def test_the_claim_reads_the_queue_through_its_index_without_statistics(make_harness: Callable[..., Harness],
                                                                         own_pg_schema: str) -> None:
    from runner.spec import load_spec
    from tenants.agents.service import store_version
    from tenants.runs.service import submit_run

    h = make_harness(db="postgres", worker=None, extra={"MIDWATCH_DATABASE_URL": own_pg_schema})
    tenant = h.onboard()
    with unit_of_work() as session:
        version = store_version(session, tenant.id, "q", load_spec(SPEC).model_dump(mode="json", by_alias=True),
                                []).version
        for n in range(1000):  # without Idempotency-Keys, as most runs are
            submit_run(session, tenant.id, version, "q", {"n": n}, None, None)
    now = utcnow()
    params = {"owner": "plan", "now": now, "lease_until": now + timedelta(seconds=30)}
    claim = _claim_sql()
    with read_only() as session:  # EXPLAIN without ANALYZE: planned, not run
        row = execute_raw(session, RawStatement(b"EXPLAIN (FORMAT JSON) " + claim.sql, claim.names), params)
    assert row is not None
    plan = row[0]
    nodes = list(_scans((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]))
    reads = [(kind, index) for kind, relation, index in nodes if relation == "runs" and kind != "ModifyTable"]
    # the loose scan of the queues, each queue's head, the chosen run (locked), then the run by its key
    assert reads and all(index in ("ix_runs_runnable", "pk_runs") for _kind, index in reads), reads
    assert "ix_runs_runnable" in {index for _kind, index in reads}, reads
