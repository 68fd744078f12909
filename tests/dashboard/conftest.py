"""A seeded SQLite database shared by the dashboard tests, plus a tenant with hand-written facts.

Given ``facts``: one agent ``facts-agent`` (3 steps, SLO 0.9) with 10 runs finished in the last two
hours, 7 succeeded and 3 failed (dependency, dependency, auth), written as the engine writes them
(runs and decision events) and folded into the read models by the deriver.
Its figures are known in advance: 70.0% measured success, 3 failures. Governance facts, written
through the owning services: a money limit of $10 per day with $8 used (80 %, threshold events 50
and 80) and an open reservation of 200 tokens; one pending approval (payments.refund, route
``approver``, expiring in about 30 min) and one rejected; secrets ``legacy_token`` (200 days old,
max 90: overdue) and ``fresh_token`` (5 days, a pending version); 3 blocked egress attempts in the
last 7 days (and one older); an audit chain tampered at seq 2.
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
    from tenants.reliability.derive import derive_all
    from tests.tenants.reliability.history import History, Step, write_history

    spec = {"apiVersion": "midwatch/v1", "name": "facts-agent", "objective": {"slo": {"success_rate": 0.9}},
            "scope": {"tools": ["sandbox.echo", "sandbox.record"]},
            "steps": [{"id": "fetch", "tool": "sandbox.echo"},
                      {"id": "draft", "llm": {"model": "sandbox", "prompt": "x"}},
                      {"id": "send", "tool": "sandbox.record"}]}
    failed_run = ""
    with unit_of_work() as session:
        tenant, _ = onboard_tenant(session, "facts", "Facts Inc")
        stored = store_version(session, tenant.id, "facts-agent", spec, [])
        history = []
        for i in range(10):
            started = now - timedelta(minutes=90 - i * 5)
            bad = i in (2, 5, 8)
            category, reason = FACT_REASONS[[2, 5, 8].index(i)] if bad else (None, None)
            steps = [Step("fetch", ok=False, category=category)] if bad else [
                Step("fetch"), Step("draft"), Step("send")]
            history.append(History(new_id("run"), "failed" if bad else "succeeded", started,
                                   started + timedelta(seconds=2), category, reason, Decimal("0.01"), steps,
                                   agent="facts-agent"))
            if bad:
                failed_run = history[-1].run_id
        assert stored.version.id
        write_history(session, tenant.id, history)
    derive_all()
    _add_governance_facts(now, tenant.id, [h.run_id for h in history])
    return tenant.id, failed_run


def _add_governance_facts(now, tenant_id: str, run_ids: list[str]) -> None:
    from sqlalchemy import update

    from tenants.approvals.service import ApprovalRequest, decide, request_approval
    from tenants.audit.models import AuditEvent
    from tenants.audit.service import record
    from tenants.budgets.service import LimitSpec, reconcile, reserve_many, set_limits
    from tenants.kit.db import unit_of_work
    from tenants.secrets.service import create_secret, rotate_secret
    from tenants.security.service import record_violation

    def ask(session, run_id: str, at, timeout_s: int):
        return request_approval(session, tenant_id, ApprovalRequest(
            run_id=run_id, agent_name="facts-agent", item_index=0, step_index=2, step_id="send",
            action="payments.refund", args={"amount": 480}, args_hash="0" * 64, rule="args.amount > 100",
            route="approver", timeout_s=timeout_s, on_timeout="deny"), at)

    with unit_of_work() as session:
        for action in ("agent.version_stored", "secret.created", "budget.limits_set"):
            record(session, tenant_id, actor="facts", role="tenant-admin", action=action, target="facts")
        set_limits(session, tenant_id, [LimitSpec("cost_usd", 10, "day"), LimitSpec("tokens", 1000, "day")], now=now)
        reserve_many(session, tenant_id, None, {"cost_usd": "8"}, "facts:spent", now=now)
        reconcile(session, tenant_id, "facts:spent", {"cost_usd": "8"}, now=now)
        reserve_many(session, tenant_id, None, {"tokens": 200}, "facts:open", run_id=run_ids[-1], now=now)
        create_secret(session, tenant_id, "legacy_token", "facts-legacy-value", max_age_days=90,
                      now=now - timedelta(days=200))
        create_secret(session, tenant_id, "fresh_token", "facts-fresh-value", max_age_days=90,
                      now=now - timedelta(days=5))
        rotate_secret(session, tenant_id, "fresh_token", "facts-fresh-value-2", now=now - timedelta(hours=2))
        for days in (1, 2, 3, 10):
            record_violation(session, tenant_id, run_id=run_ids[0], agent_name="facts-agent", step_id="send",
                             kind="host", target="exfil.example.net",
                             reason="host exfil.example.net is outside the agent's declared egress",
                             at=now - timedelta(days=days))
        ask(session, run_ids[0], now - timedelta(minutes=10), 2400)
        rejected = ask(session, run_ids[1], now - timedelta(minutes=40), 3600)
        decide(session, tenant_id, rejected.id, approve=False, role="approver", key_id="key_facts_approver",
               comment="amount looks wrong")
    with unit_of_work() as session:  # tamper with the audit trail behind the chain's back
        session.execute(update(AuditEvent).where(AuditEvent.tenant_key == tenant_id, AuditEvent.seq == 2)
                        .values(target="someone-else"))


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededDb]:
    """Migrate a fresh SQLite database, register an operator key, seed 600 runs over 5 tenants, add ``facts``."""
    from tenants.accounts.service import ensure_operator_key, open_platform_chain
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
        with unit_of_work() as session:  # as midwatch.services.bootstrap does
            open_platform_chain(session)
            ensure_operator_key(session, key)
        from dashboard.seed import seed

        now = utcnow()
        seed(600, 5, now=now)
        facts_id, failed_run = _add_facts(now)
        yield SeededDb(data_dir, get_settings().sqlalchemy_url, key, facts_id, failed_run, env)
        reset_engine()
        reset_settings()
