"""The seed writes base data only (runs, decision events): its read models are what the deriver folds from
them, and equal an independent recount of the base tables."""

from __future__ import annotations

from tests.dashboard.conftest import SeededDb
from tests.tenants.reliability.recount import read_models, recount


def test_seeded_read_models_equal_a_recount_of_the_decision_log(seeded_db: SeededDb) -> None:
    from tenants.kit.db import read_only

    with read_only() as s:
        expected = recount(s)
        got = read_models(s)
    for name in expected:
        assert got[name] == expected[name], name
    assert len(expected["hours"]) > 100 and len(expected["steps"]) > 100 and expected["failures"]


def test_seeded_specs_are_valid_agent_specs(seeded_db: SeededDb) -> None:
    from runner.spec import load_spec
    from tenants.kit.db import read_only
    from tenants.reliability.repository import PlatformReliabilityRepository

    with read_only() as s:
        specs = PlatformReliabilityRepository(s).latest_specs()
    assert specs
    for _, name, _, spec in specs:
        assert load_spec(spec).name == name
