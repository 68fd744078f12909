"""The Rehearsals page: each agent version's latest rehearsal, the history, and one report's changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import SeededDb

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")

REPORT: dict[str, Any] = {
    "verdict": {"result": "fail", "reasons": ["measured end-to-end success 81.7% is below the SLO 90.0%"]},
    "figures": {
        "end_to_end": {"tries": 60, "succeeded": 49, "measured": 0.8167, "projected": 0.81, "slo": 0.9},
        "pass_k": {"k": 3, "value": 0.5},
        "steps": [{"id": "draft", "kind": "llm", "reached": 55, "passed": 49, "accepted_wrong": 4, "success": 0.891,
                   "retries": {"validation": 4}, "failed": {"validation": 2}}],
        "escalations": {"by_reason": [{"count": 2, "step": "draft", "category": "validation",
                                       "why": "cut off by max_tokens", "example": "model 'sandbox' hit max_tokens"}]},
    },
    "timings": {"recovery_s": 5.2},
    "changes": [{"code": "accepted_wrong_answers", "change": "add rules to step `draft`: `size(output.text) > 0`",
                 "evidence": "step `draft` accepted 4 answer(s) the rehearsal knew were wrong (empty x4)",
                 "impact": 4}],
}


@pytest.fixture(scope="module")
def rehearsed(seeded_db: SeededDb) -> SeededDb:
    """Two rehearsals of facts-agent v1: a failed one, then a passed one (the version's latest)."""
    from tenants.agents.service import get_version
    from tenants.kit.db import unit_of_work
    from tenants.rehearsals.service import Headline, begin_rehearsal, finish_rehearsal

    for verdict, measured in (("fail", 0.8167), ("pass", 0.97)):
        with unit_of_work() as session:
            version = get_version(session, seeded_db.facts_tenant_id, "facts-agent", 1)
            row = begin_rehearsal(session, seeded_db.facts_tenant_id, agent_name="facts-agent", version=version,
                                  source="agent", spec_hash=version.spec_hash, profile="realistic", options=None,
                                  seed=1, items=20, repeat=3, requested_by="cli")
            finish_rehearsal(session, seeded_db.facts_tenant_id, row.id, {**REPORT, "verdict": {
                "result": verdict, "reasons": REPORT["verdict"]["reasons"]}},
                Headline(verdict, measured, 0.81, 0.9, 0.5, 0, 5.2))
    return seeded_db


def test_rehearsals_page_shows_each_versions_latest_verdict_its_history_and_a_reports_changes(
        rehearsed: SeededDb) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input(key="operator_key").input(rehearsed.operator_key)
    at.button[0].click()
    at.run()
    at.switch_page("views/rehearsals.py").run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Rehearsals"] == "2"
    versions, history = at.dataframe[0].value, at.dataframe[1].value  # per version, then the history
    row = versions[versions["agent"] == "facts-agent"].iloc[0]
    assert (row["version"], row["rehearsals"], row["latest"], row["measured"]) == ("v1", 2, "PASS", "97.0%")
    assert list(history["outcome"]) == ["PASS", "FAIL"]
    at.selectbox(key="rh_pick").select_index(1).run()
    changes = at.dataframe[2].value  # the picked report's changes
    assert changes.iloc[0]["evidence"].startswith("step `draft` accepted 4 answer(s)")
    assert any("below the SLO" in e.value for e in at.error)
