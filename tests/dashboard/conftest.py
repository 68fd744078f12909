"""A seeded SQLite database shared by the dashboard tests, plus a tenant with hand-written facts.

Given ``facts``: one agent ``facts-agent`` (3 steps, SLO 0.9) with 10 runs finished in the last two
hours, 7 succeeded and 3 failed (dependency, dependency, auth), recorded through the runner hooks.
Its figures are known in advance: 70.0% measured success, 3 failures.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

FACT_REASONS = [("dependency", "crm.get_invoice: 503 Service Unavailable after 3 attempts"),
                ("dependency", "crm.get_invoice: timed out after 10 s"),
                ("auth", "mail.send_reminder: 401 Unauthorized; OAuth refresh failed")]


@dataclass
class SeededDb:
    data_dir: Path
    url: str
    operator_key: str
    facts_tenant_id: str
    facts_failed_run: str
    env: dict[str, str]


def _add_facts(now) -> tuple[str, str]:
    from tenants.accounts.service import onboard_tenant
    from tenants.agents.service import store_version
    from tenants.kit.db import unit_of_work
    from tenants.kit.ids import new_id
    from tenants.reliability.service import load_rows, record_run_finished, record_run_started, record_step

    spec = {"apiVersion": "midwatch/v1", "name": "facts-agent", "objective": {"slo": {"success_rate": 0.9}},
            "scope": {"tools": ["sandbox.echo", "sandbox.record"]},
            "steps": [{"id": "fetch", "tool": "sandbox.echo"},
                      {"id": "draft", "llm": {"model": "sandbox", "prompt": "x"}},
                      {"id": "send", "tool": "sandbox.record"}]}
    failed_run = ""
    with unit_of_work() as session:
        tenant, _ = onboard_tenant(session, "facts", "Facts Inc")
        stored = store_version(session, tenant.id, "facts-agent", spec, [])
        rows = []
        for i in range(10):
            started = now - timedelta(minutes=90 - i * 5)
            finished = started + timedelta(seconds=2)
            run_id = new_id("run")
            bad = i in (2, 5, 8)
            category, reason = FACT_REASONS[[2, 5, 8].index(i)] if bad else (None, None)
            state = "failed" if bad else "succeeded"
            record_run_started(session, tenant.id, "facts-agent", at=started)
            for step in ("fetch", "draft", "send"):
                ok = not (bad and step == "fetch")
                record_step(session, tenant.id, "facts-agent", step, ok=ok, category=None if ok else category,
                            latency_ms=100.0, retries=0, at=finished)
                if not ok:
                    break
            record_run_finished(session, tenant.id, "facts-agent", run_id, state=state, category=category,
                                reason=reason, started_at=started, finished_at=finished, cost_usd=Decimal("0.01"))
            rows.append({"id": run_id, "tenant_id": tenant.id, "agent_id": stored.agent.id,
                         "agent_name": "facts-agent", "agent_version_id": stored.version.id, "agent_version": 1,
                         "state": state, "reason": reason, "failure_category": category, "input": None,
                         "is_batch": False, "items_total": 1, "items_done": int(not bad), "items_failed": int(bad),
                         "steps_done": 3 if not bad else 0, "llm_calls": 1, "cost_usd": Decimal("0.01"),
                         "idempotency_key": None, "request_hash": None, "lease_owner": None, "lease_until": None,
                         "fence": 1, "crash_count": 0, "cancel_requested": False, "wake_at": None,
                         "created_at": started, "started_at": started, "finished_at": finished,
                         "updated_at": finished})
            if bad:
                failed_run = run_id
        load_rows(session, "runs", rows)
    return tenant.id, failed_run


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededDb]:
    """Migrate a fresh SQLite database, register an operator key, seed 600 runs over 5 tenants, add ``facts``."""
    from tenants.accounts.service import ensure_operator_key
    from tenants.kit.db import reset_engine, unit_of_work
    from tenants.kit.ids import utcnow
    from tenants.kit.settings import get_settings, reset_settings
    from tenants.migrations import upgrade

    data_dir = tmp_path_factory.mktemp("dash") / "data"
    data_dir.mkdir()
    key = f"mw_op_test_{secrets.token_urlsafe(24)}"
    env = {"MIDWATCH_DATA_DIR": str(data_dir), "MIDWATCH_OPERATOR_KEY": key, "MIDWATCH_LOG_LEVEL": "warning"}
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in __import__("os").environ if k.startswith("MIDWATCH_") and "TEST" not in k]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        reset_settings()
        reset_engine()
        upgrade()
        with unit_of_work() as session:
            ensure_operator_key(session, key)
        from dashboard.seed import seed

        now = utcnow()
        seed(600, 5, now=now)
        facts_id, failed_run = _add_facts(now)
        yield SeededDb(data_dir, get_settings().sqlalchemy_url, key, facts_id, failed_run, env)
        reset_engine()
        reset_settings()
