"""The 3 a.m. rehearsal end to end on the embedded default: a real worker process killed with kill -9, a real
fault-injecting upstream counting every request, a real installation whose secrets, upstreams and figures
the rehearsal must not touch.

Three rehearsals run once for the module (a fragile spec twice with the same seed, a hardened one) and the
stories below read what they did.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from runner.rehearsal import RehearsalOptions, profile_from, source_from_agent
from runner.rehearsal.orchestrate import Observed, carry_out
from runner.rehearsal.report import build_report
from runner.rehearsal.upstream import CONTEXT_HEADER, parse_context
from runner.sandbox_upstream import FaultyUpstream
from tests.conftest import Harness, Tenant
from tests.rehearsal.conftest import REAL_SECRET, TEST_PROFILE, put_agent, put_real_secret

ITEMS, REPEAT, SEED = 8, 2, 11


@dataclass
class Night:
    h: Harness
    production: FaultyUpstream
    fragile: tuple[Observed, dict[str, Any]]
    fragile_again: tuple[Observed, dict[str, Any]]
    hardened: tuple[Observed, dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]
    tenants: dict[str, Tenant]


def _production_figures() -> dict[str, Any]:
    """What the installation's own figures say: runs, decision events, read models, budgets, step metrics."""
    from tenants.budgets.models import BudgetEvent
    from tenants.kit.db import read_only
    from tenants.reliability.derive import derive_all
    from tenants.reliability.models import FailureHourly, RunRollupHourly, StepStatDaily
    from tenants.runs.models import DecisionEvent, Run
    from tenants.secrets.models import Secret

    derive_all()
    with read_only() as s:
        counts = {model.__tablename__: s.scalar(select(func.count()).select_from(model))
                  for model in (Run, DecisionEvent, RunRollupHourly, StepStatDaily, FailureHourly, BudgetEvent)}
        counts["secret_last_used"] = sorted(str(v) for v in s.scalars(select(Secret.last_used_at)))
    counts["step_metrics"] = sum(m.value for metric in REGISTRY.collect() if metric.name == "midwatch_steps"
                                 for m in metric.samples if m.name.endswith("_total"))
    return counts


def _observe(tenant: str, seed: int = SEED) -> tuple[Observed, dict[str, Any]]:
    from tenants.kit.settings import get_settings

    options = RehearsalOptions(profile=profile_from(TEST_PROFILE), items=ITEMS, repeat=REPEAT, seed=seed, timeout_s=120)
    observed = carry_out(get_settings(), source_from_agent(tenant, "refunds"), options)
    return observed, build_report(observed)


@pytest.fixture(scope="module")
def night(installation: Harness) -> Iterator[Night]:
    h = installation
    with FaultyUpstream() as production:  # the tenants' real API: a rehearsal must never reach it
        tenants = {"fragile": h.onboard("fragile"), "hardened": h.onboard("hardened")}
        for name, tenant in tenants.items():
            put_real_secret(h, tenant)
            put_agent(h, tenant, production, hardened=name == "hardened")
        before = _production_figures()
        fragile = _observe("fragile")
        fragile_again = _observe("fragile")
        hardened = _observe("hardened")
        yield Night(h, production, fragile, fragile_again, hardened, before, _production_figures(), tenants)


def test_a_fragile_spec_fails_its_slo_and_names_the_changes_with_their_evidence(night: Night) -> None:
    _, report = night.fragile
    assert report["verdict"]["result"] == "fail"
    assert any("below the SLO 90.0%" in r for r in report["verdict"]["reasons"]), report["verdict"]
    e2e = report["figures"]["end_to_end"]
    assert e2e["measured"] < 0.9 and e2e["silently_wrong"] > 0, e2e
    codes = {c["code"] for c in report["changes"]}
    assert "accepted_wrong_answers" in codes, report["changes"]  # the draft had no rules: wrong answers went out
    assert codes & {"not_idempotent", "retries_exhausted"}, report["changes"]
    wrong = next(c for c in report["changes"] if c["code"] == "accepted_wrong_answers")
    draft = next(s for s in report["figures"]["steps"] if s["id"] == "draft")
    assert f"accepted {draft['accepted_wrong']} answer(s)" in wrong["evidence"] and draft["accepted_wrong"] > 0
    assert len(report["changes"]) <= 3


def test_the_hardened_spec_passes_the_same_night(night: Night) -> None:
    _, report = night.hardened
    assert report["verdict"]["result"] == "pass", (report["verdict"], report["changes"])
    figures = report["figures"]
    assert figures["end_to_end"]["measured"] >= 0.9 and figures["end_to_end"]["silently_wrong"] == 0
    assert figures["pass_k"]["k"] == 2 and figures["pass_k"]["value"] >= 0.75
    assert figures["side_effects"]["duplicates"] == 0
    # it faced the same kind of night: faults were injected, the worker was killed mid-call and recovered
    assert sum(v for k, v in figures["faults"]["tools"].items() if k != "ok") > 0
    kill = figures["platform"]["worker_kill"]
    assert kill["killed"] and kill["progressed_again"] and kill["step"] == "send", kill
    assert report["timings"]["recovery_s"] is not None and report["timings"]["recovery_s"] < 15


def test_the_same_seed_gives_the_same_report(night: Night) -> None:
    (_, first), (_, second) = night.fragile, night.fragile_again
    for part in ("figures", "verdict", "changes", "seed", "profile", "items", "repeat"):
        assert first[part] == second[part], part
    assert first["rehearsal_id"] != second["rehearsal_id"]  # two rehearsals, one schedule


def test_the_reports_counts_equal_the_recording_upstreams_ledger(night: Night) -> None:
    for observed, report in (night.fragile, night.hardened):
        raw = [r for r in observed.raw_requests if CONTEXT_HEADER.lower() in r.headers]
        figures = report["figures"]
        # every request the upstream received, per path, is in the report's request counts
        assert figures["requests"]["total"] == len(observed.raw_requests)
        mail = [r for r in raw if r.path.startswith("/mail")]
        assert figures["side_effects"]["by_tool"]["mail.send"]["requests"] == len(mail)
        # requests re-sending an idempotency key, recounted from the raw requests
        keys = Counter(r.headers.get("idempotency-key") for r in mail)
        assert figures["side_effects"]["resent_keys"] == sum(n - 1 for n in keys.values())
        # an action (repetition, item) of the send step never got a second key: the ledger kept its key
        keys_per_action: dict[tuple[int, int], set[str]] = {}
        for r in mail:
            rep, item, _ = parse_context(r.headers[CONTEXT_HEADER.lower()])
            keys_per_action.setdefault((rep, item), set()).add(str(r.headers.get("idempotency-key")))
        assert all(len(k) == 1 for k in keys_per_action.values()), keys_per_action
        # effects carried out, counted at the source, and duplicates: none
        applied = Counter(s.action for s in observed.served if s.applied)
        assert figures["side_effects"]["effects"] == sum(applied.values())
        assert figures["side_effects"]["duplicates"] == sum(n - 1 for n in applied.values()) == 0
        # the engine's decision log agrees with the upstream: every tool request is an attempt the log records, except
        # the one cut off by the kill (its attempt died with the worker)
        attempts = sum(1 for e in [*observed.step_events, *observed.deferrals] if e.step_id in ("fetch", "send")
                       for v in e.verdicts or [] if isinstance(v, dict) and "decided" in v)
        tool_requests = sum(1 for r in raw if r.path.startswith(("/orders/", "/mail")))
        assert tool_requests == attempts + (1 if figures["platform"]["worker_kill"]["killed"] else 0)


def test_a_non_idempotent_side_effect_cut_by_the_kill_escalates_instead_of_repeating(night: Night) -> None:
    observed, report = night.fragile
    hit = observed.platform.kill
    assert hit is not None and hit.target == "tool:mail.send" and hit.applied  # it reached the API, then the kill
    repeated = [s for s in observed.served if s.action == hit.action and s.seq != hit.seq]
    assert repeated == [], "a non-idempotent call whose outcome was unknown was sent again"
    assert report["figures"]["human_decisions"]["unknown_outcomes"] >= 1


def test_a_rehearsal_never_reaches_a_real_upstream_nor_reads_a_real_secret(night: Night) -> None:
    assert night.production.requests == [], "a rehearsal reached the tenant's real API"
    for observed, report in (night.fragile, night.fragile_again, night.hardened):
        # at the egress layer: every hop the worker made went to the rehearsal upstream, none was refused
        assert observed.egress and all(e["allowed"] for e in observed.egress)
        ports = {int(a.rsplit(":", 1)[1]) for a in observed.plan.allowed}
        assert {e["port"] for e in observed.egress} <= ports and {e["host"] for e in observed.egress} == {"127.0.0.1"}
        # the tool sent a fake, never the tenant's real token
        bearer = {r.headers.get("authorization") for r in observed.raw_requests if r.path.startswith("/orders/")}
        assert bearer == {f"Bearer {observed.plan.secrets['crm_token']}"}
        assert REAL_SECRET not in json.dumps(report) and REAL_SECRET not in observed.plan.to_json()
        assert all(REAL_SECRET.encode() not in r.body and REAL_SECRET not in json.dumps(r.headers)
                   for r in observed.raw_requests)
    assert night.after["secret_last_used"] == night.before["secret_last_used"], "a real secret was read"


def test_rehearsal_runs_do_not_move_production_figures(night: Night) -> None:
    before, after = night.before, night.after
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    for tenant in night.tenants.values():
        r = night.h.client.get("/v1/runs", headers=tenant.headers)
        assert r.status_code == 200 and r.json()["data"] == []
