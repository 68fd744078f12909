"""A seeded SQLite database shared by the dashboard tests, plus a tenant with hand-written facts; a small
database of queue facts (``queue_db``, see :func:`_queue_facts`); and the helpers the page tests share.

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

import contextlib
import math
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")

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
    seeded_at: datetime | None = None  # the seed's "now"


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
    from tenants.kit.ids import utcnow
    from tenants.kit.settings import get_settings

    data_dir = tmp_path_factory.mktemp("dash") / "data"
    data_dir.mkdir()
    with _database(data_dir) as (key, env):
        from dashboard.seed import seed

        now = utcnow()
        seed(600, 5, now=now)
        facts_id, failed_run = _add_facts(now)
        yield SeededDb(data_dir, get_settings().sqlalchemy_url, key, facts_id, failed_run, env, now)


@contextlib.contextmanager
def _database(data_dir: Path, database_url: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """Point the settings at a fresh, migrated SQLite database in ``data_dir`` (or at ``database_url``) with an
    operator key; restore the previous environment (and engine) on exit. Yields (operator key, environment)."""
    from tenants.accounts.service import ensure_operator_key, open_platform_chain
    from tenants.kit.db import reset_engine, unit_of_work
    from tenants.kit.settings import reset_settings
    from tenants.migrations import upgrade

    key = f"mw_op_test_{secrets.token_urlsafe(24)}"
    env = {"MIDWATCH_DATA_DIR": str(data_dir), "MIDWATCH_OPERATOR_KEY": key, "MIDWATCH_LOG_LEVEL": "warning"}
    if database_url is not None:
        env["MIDWATCH_DATABASE_URL"] = database_url
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("MIDWATCH_") and "TEST" not in k]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        reset_settings()
        reset_engine()
        try:
            upgrade()
            with unit_of_work() as session:  # as midwatch.services.bootstrap does
                open_platform_chain(session)
                ensure_operator_key(session, key)
            yield key, env
        finally:
            reset_engine()
            reset_settings()
    reset_engine()  # the environment before (another database's, perhaps) is back: rebuild from it
    reset_settings()


# ---- queue facts ----------------------------------------------------------------------------------------------
ALPHA_QUEUED_S = (30, 120, 240, 420, 540, 720)  # alpha's due runs, submitted this long ago
ALPHA_WAITS_S = (5, 10, 20, 40, 60, 90, 120, 180, 240, 400)  # alpha's starts 5-50 min ago waited this long
ALPHA_LONG = (3 * 3600, 20 * 60)  # (submitted, started) seconds ago: waited 9,600 s, started inside the hour
ALPHA_OLD = (80 * 60 + 5000, 80 * 60)  # started 80 min ago, outside the hour: never counted
BETA_QUEUED_S = (60, 120, 240)  # beta (concurrent_runs 1): a worker claimed the 240 s one; 2 held at the cap
BETA_WAITS_S = (0.2, 0.3, 0.5)
GAMMA_SLOW_S, GAMMA_FAST_S = (180, 60), 30  # gamma's agent "slow" may run 1: the 180 s one runs, 60 s is held
CALM_WAITS_S = (1.0, 2.0, 3.0, 4.0)


@dataclass
class QueueDb:
    """The queue facts' database: when the facts were written, and how to sign in."""

    data_dir: Path
    url: str
    operator_key: str
    now: datetime
    tenants: dict[str, str] = field(default_factory=dict)  # name -> id


def _queue_facts(now: datetime) -> dict[str, str]:
    """Given, at ``now``: alpha has a backlog (the oldest due run waits 12 min) and slow starts (waits from 5 s
    to 9,600 s over the last hour); beta is at its concurrent_runs limit of 1 with 2 runs held; gamma's agent
    ``slow`` is at its own cap (1 held) while agent ``fast`` has 1 waiting; calm has no queue and quick starts;
    idle has nothing. Runs are written as the engine writes them, caps through the budgets service, the
    running slots by real claims; the read models are derived."""
    from tenants.accounts.service import onboard_tenant
    from tenants.budgets.service import LimitSpec, set_limits
    from tenants.kit.db import unit_of_work
    from tenants.kit.ids import new_id
    from tenants.reliability.derive import derive_all
    from tenants.runs.dispatch import dispatch_repository
    from tests.tenants.reliability.history import History, write_history

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    def queued(agent: str, *ages: float) -> list[History]:
        return [History(new_id("run"), None, None, created=ago(a), runnable_at=ago(a), agent=agent) for a in ages]

    def started(waits: tuple[float, ...], first_ago: float, every: float) -> list[History]:
        out = []
        for k, wait in enumerate(waits):
            at = ago(first_ago - k * every)
            out.append(History(new_id("run"), "succeeded", at, at + timedelta(seconds=2), created=at - timedelta(
                seconds=wait), agent="bulk"))
        return out

    with unit_of_work() as session:
        ids = {name: onboard_tenant(session, name, name.title())[0].id
               for name in ("alpha", "beta", "gamma", "calm", "idle")}
        set_limits(session, ids["beta"], [LimitSpec("concurrent_runs", 1)], now=now)
        set_limits(session, ids["gamma"], [LimitSpec("concurrent_runs", 1, agent="slow")], now=now)
    with unit_of_work() as session:  # beta's runs first: the claim can only take beta's oldest
        write_history(session, ids["beta"], queued("bulk", *BETA_QUEUED_S))
        assert dispatch_repository(session).claim("worker-test:1", now, 300.0) is not None
    with unit_of_work() as session:  # then gamma's slow runs: beta is at its cap, so gamma's oldest slow run
        write_history(session, ids["gamma"], queued("slow", *GAMMA_SLOW_S))
        assert dispatch_repository(session).claim("worker-test:1", now, 300.0) is not None
    with unit_of_work() as session:
        write_history(session, ids["gamma"], queued("fast", GAMMA_FAST_S))
        write_history(session, ids["alpha"], queued("bulk", *ALPHA_QUEUED_S))
        deferred = History(new_id("run"), None, None, created=ago(60), runnable_at=now + timedelta(minutes=10),
                           agent="bulk")  # a back-off: in the queue, not due yet
        write_history(session, ids["alpha"], [deferred])
        write_history(session, ids["alpha"], started(ALPHA_WAITS_S, 50 * 60, 5 * 60))
        for submitted, start in (ALPHA_LONG, ALPHA_OLD):
            write_history(session, ids["alpha"], [History(new_id("run"), "succeeded", ago(start), ago(start - 2),
                                                          created=ago(submitted), agent="bulk")])
        write_history(session, ids["beta"], started(BETA_WAITS_S, 30 * 60, 60))
        write_history(session, ids["calm"], started(CALM_WAITS_S, 40 * 60, 60))
    derive_all()
    return ids


@pytest.fixture(scope="module")
def queue_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueDb]:
    """A fresh SQLite database holding only the queue facts (:func:`_queue_facts`)."""
    from tenants.kit.ids import utcnow
    from tenants.kit.settings import get_settings

    data_dir = tmp_path_factory.mktemp("queues") / "data"
    data_dir.mkdir()
    with _database(data_dir) as (key, _env):
        now = utcnow()
        ids = _queue_facts(now)
        yield QueueDb(data_dir, get_settings().sqlalchemy_url, key, now, ids)


# ---- page helpers -----------------------------------------------------------------------------------------------
def signed_in(operator_key: str) -> AppTest:
    """The app after signing in with ``operator_key``: the Overview page."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="operator_key").input(operator_key)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    return at


def frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return str(m.value)
    raise AssertionError(f"no metric {label!r}: {[m.label for m in at.metric]}")


_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(shown: str) -> float:
    """A duration as the pages print it ("12.3 s", "1.5 min", "2.0 h") back in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?) (s|min|h|d)", shown)
    assert match, f"not a duration: {shown!r}"
    return float(match[1]) * _UNITS[match[2]]


def shown_close(shown: str, expected_s: float, rel: float = 0.0, slack_s: float = 0.0) -> bool:
    """A printed duration equals ``expected_s`` within ``rel`` (relative), the print's rounding (half its last
    digit) and ``slack_s``."""
    unit = _UNITS[shown.split()[1]]
    return abs(seconds(shown) - expected_s) <= rel * expected_s + 0.05 * unit + slack_s + 1e-9


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile: the ceil(q x n)-th smallest value."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
