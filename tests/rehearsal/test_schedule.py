"""The fault schedule is a function of the seed, follows the profile's rates, and puts the kill mid-batch;
profiles are bounded like any tenant input."""

from __future__ import annotations

from collections import Counter

import pytest

from midwatch.demo import DEMO_SPEC
from runner.errors import SpecInvalid
from runner.rehearsal.faults import CallKey, Schedule
from runner.rehearsal.plan import Source
from runner.rehearsal.profile import BUILTIN, profile_from
from runner.rehearsal.samples import make_items
from runner.spec import load_spec

SPEC = load_spec(DEMO_SPEC)


def _faults(seed: int, profile: str = "realistic", n: int = 1) -> list[str]:
    schedule = Schedule(seed, BUILTIN[profile], SPEC, items=50, repeat=4, side_effects={"sandbox.record"})
    return [schedule.tool_fault(CallKey(rep, item, step, "tool:t"), n, has_auth=True, can_drift=True)
            for rep in range(1, 5) for item in range(50) for step in ("fetch", "send")]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert _faults(5) == _faults(5)
    assert _faults(5) != _faults(6)


def test_faults_follow_the_profile_and_retries_meet_fewer() -> None:
    counts = Counter(_faults(1) + _faults(2) + _faults(3))
    total = sum(counts.values())
    assert 0.03 < counts["rate_limit"] / total < 0.08 and 0.15 < 1 - counts["ok"] / total < 0.35, counts
    gentle = Counter(_faults(1, "gentle"))
    assert gentle["ok"] > Counter(_faults(1))["ok"] > Counter(_faults(1, "hostile"))["ok"]
    later = Counter(_faults(1, n=3))
    assert later["ok"] > counts["ok"] / 3  # a third request of a call meets a fault less often


def test_the_worker_is_killed_mid_batch_of_the_last_repetition_on_the_side_effect_step() -> None:
    for seed in range(20):
        slot = Schedule(seed, BUILTIN["realistic"], SPEC, items=30, repeat=3, side_effects={"sandbox.record"}).kill
        assert slot is not None and slot.rep == 3 and slot.step == "send" and 10 <= slot.item_from < 20
    assert Schedule(1, BUILTIN["gentle"], SPEC, items=30, repeat=3, side_effects=set()).kill is None


def test_items_are_made_from_the_input_schema_and_the_seed() -> None:
    source = Source(spec=SPEC, spec_json={}, origin="file")
    items = make_items(source, 5, seed=9)
    assert items == make_items(source, 5, seed=9) and len({i["invoice_id"] for i in items}) == 5
    assert all({"invoice_id", "email", "amount"} <= set(i) and "@" in i["email"] for i in items)


@pytest.mark.parametrize("bad, where", [
    ({"tools": {"rate_limit": 2}}, "tools.rate_limit"),
    ({"tools": {"rate_limit": 0.6, "unavailable": 0.6}}, "tools"),
    ({"tools": {"timeouts": 99}}, "tools.timeouts"),
    ({"platform": {"restart_database": True}}, "platform.restart_database"),
    ({"extends": "apocalyptic"}, "extends"),
])
def test_a_profile_out_of_bounds_is_refused_with_its_path(bad: dict[str, object], where: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        profile_from(bad)
    assert any(i.path == where for i in caught.value.issues), caught.value.issues


def test_a_custom_profile_extends_a_built_in_one() -> None:
    custom = profile_from({"extends": "gentle", "name": "quiet", "models": {"rule_breaking": 0.5}})
    assert custom.tools == BUILTIN["gentle"].tools and custom.models.rule_breaking == 0.5
