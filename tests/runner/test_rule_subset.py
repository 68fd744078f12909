"""runner.rule_subset: the Python evaluator of CEL's comparison subset says what cel says, or nothing.

Differential: random rules of the subset over random data, each answered by the subset (when it answers)
and by cel through the reference path (``compile_rule(...).evaluate``). A rule set's shortcuts
(``all_true``, ``first_true``) agree with evaluating its rules one by one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import RuleError
from runner.rule_subset import compile_subset
from runner.rules import RuleInput, StepOutputs, _surely_small_chars, compile_rule, rule_set

PATHS = ["output.n", "output.s", "output.f", "output.b", "output.none", "output.missing", "output.xs",
         "item.n", "step.args.n", "step.tool", "output", "steps.a.output.n", "output.xs.a", "output.s.a"]
LITERALS = ["0", "1", "2", "3", "5", "-3", "9223372036854775807", "1.5", "-0.5", "1e3", "'a'", '"b"', "''",
            "true", "false", "null"]
OPERATORS = ["==", "!=", "<", "<=", ">", ">="]


def _atoms() -> Any:
    left = [*PATHS, "size(output.xs)", "output.xs.size()", "size(steps)", "!output.b"]
    compare = st.builds(lambda a, op, b: f"{a} {op} {b}", st.sampled_from(left), st.sampled_from(OPERATORS),
                        st.sampled_from([*LITERALS, *PATHS[:2]]))
    outside = st.sampled_from(["output.n + 0 == 0", "output.n in [1, 2]", "output.s + 'x' == 'ax'",
                               "has(output.n)"])  # cel only: the set's combined program answers these
    return compare | outside | st.sampled_from(["output.b", "!output.b", "true", "false", "output.n"])


def _rules() -> Any:
    return st.recursive(_atoms(), lambda inner: st.builds(lambda a, op, b: f"({a}) {op} {b}", inner,
                                                           st.sampled_from(["&&", "||"]), inner)
                        | st.builds(lambda a: f"!({a})", inner), max_leaves=4)


def _scalars() -> Any:
    return (st.integers(-10, 10) | st.integers(2**62, 2**64) | st.floats(allow_infinity=True)
            | st.sampled_from(["a", "b", "", "é", "ab", "\ud800"]) | st.booleans() | st.none()
            | st.sampled_from([Decimal("1.5"), Decimal(5), (1, 2)]))


def _data() -> Any:
    output = st.fixed_dictionaries({}, optional={
        "n": _scalars(), "s": _scalars(), "f": _scalars(), "b": _scalars(), "none": st.none(),
        "xs": st.lists(st.integers(0, 3), max_size=4) | st.just(["\ud800"])
        | st.dictionaries(st.sampled_from("ab"), st.integers())
        | st.sampled_from(["abc", "é", "\ud800", "é😀", 3])})

    def build(out: dict[str, Any], n: Any, args_n: Any, tool: Any, with_steps: bool) -> dict[str, Any]:
        steps = StepOutputs()
        if with_steps:
            steps["a"] = {"output": {"n": n}}
        return {"output": out, "item": {"n": n}, "step": {"tool": tool, "args": {"n": args_n}}, "steps": steps}

    return st.builds(build, output, _scalars(), _scalars(), _scalars(), st.booleans())


def _subset(src: str) -> Any:
    """The subset's predicate with the size limit the rule set would give it (any size for text cel refuses)."""
    try:
        limit = _surely_small_chars(compile_rule(src)._plan)
    except RuleError:
        limit = 10**9
    return compile_subset(src, limit)


def _reference(src: str, data: dict[str, Any]) -> bool | None:
    try:
        return compile_rule(src).evaluate(data)
    except RuleError:
        return None  # an error: the subset must not have answered


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(_rules(), _data())
def test_when_the_subset_answers_it_answers_as_cel(src: str, data: dict[str, Any]) -> None:
    predicate = _subset(src)
    if predicate is None:
        return
    answer = predicate(data)
    if answer is not None:
        assert answer is _reference(src, data), (src, data)


@pytest.mark.parametrize(("src", "data", "expected"), [
    ("output.n >= 0 && output.step < 100", {"output": {"n": 3, "step": 5}}, True),
    ("size(steps) <= 50", {"steps": {"a": {}, "b": {}}}, True),
    ("step.tool == 'sandbox.echo' && step.args.n > 1000000", {"step": {"tool": "sandbox.echo", "args": {"n": 5}}},
     False),
    ("output.xs.size() == 2 || output.ok", {"output": {"xs": [1, 2], "ok": 7}}, True),  # true || anything
    ("false && output.missing", {"output": {}}, False),
    ("!(output.s != 'x')", {"output": {"s": "x"}}, True),
])
def test_plain_comparisons_are_answered_without_cel(src: str, data: dict[str, Any], expected: bool) -> None:
    predicate = _subset(src)
    assert predicate is not None
    assert predicate(data) is expected is _reference(src, data)


@pytest.mark.parametrize(("src", "data"), [
    ("output.n > 0", {"output": {"n": Decimal(3)}}),  # cel sees an int: the subset does not guess
    ("output.n > 1.0", {"output": {"n": 3}}),  # int against double
    ("output.n > 0", {"output": {"n": 2**64}}),  # beyond 64 bits
    ("output.s < 'z'", {"output": {"s": "é"}}),  # outside ASCII
    ("size(output.s) == 1", {"output": {"s": "é"}}),  # cel-rust counts UTF-8 bytes: 2
    ("output.f < 1.5", {"output": {"f": float("nan")}}),  # cel-rust: no ordering for NaN, an error
    ("true || output.s == 'a'", {"output": {"s": "\ud800"}}),  # cel cannot convert the string: an error
    ("true || output.xs.a == 1", {"output": {"xs": ["\ud800"]}}),  # the list is converted whole
    ("output.n > 0", {"output": {}}),  # missing: cel's error is the answer
    ("!output.n == false", {"output": {"n": 1}}),  # ! of an int: an error in cel
    ("output.b && true", {"output": {"b": 1}}),
])
def test_anything_not_plain_is_left_to_cel(src: str, data: dict[str, Any]) -> None:
    predicate = _subset(src)
    assert predicate is None or predicate(data) is None


@pytest.mark.parametrize("src", [
    "output.n + 1 > 0", "output.s.startsWith('a')", "output.n in [1, 2]", "has(output.n)", "output['n'] > 0",
    "output.n > 0 ? true : false", "output.n > 0 // note", "r'a' == output.s", "'a\\'b' == output.s",
    "output.xs.all(x, x > 0)", "int(output.s) > 0", "1 < output.n < 3", "output.size > 0",
    "!" * 900 + "true", "(" * 40 + "true" + ")" * 40,  # deeper than the subset recurses: cel's to judge
])
def test_text_outside_the_subset_compiles_to_nothing(src: str) -> None:
    assert _subset(src) is None


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_rules(), min_size=1, max_size=3), _data())
def test_a_rule_sets_shortcuts_agree_with_the_rules_one_by_one(sources: list[str], data: dict[str, Any]) -> None:
    one_by_one = [_reference(src, data) for src in sources]
    rules = rule_set(tuple(sources))
    if rules.all_true(RuleInput(data)):
        assert all(v is True for v in one_by_one), (sources, data, one_by_one)
    first = rules.first_true(RuleInput(data))
    if first is not None:
        decided = one_by_one[: first + 1] if first >= 0 else one_by_one
        assert all(v is not None for v in decided), (sources, data, one_by_one)  # no rule before it errs
        assert first == next((i for i, v in enumerate(one_by_one) if v), -1), (sources, data, one_by_one)


def test_the_combined_cel_program_takes_no_shortcut_through_a_value_cel_would_refuse() -> None:
    rules = rule_set(("true || output.xs.a == 1", "output.n + 0 == 0 || true"))  # outside the subset
    assert rules._flat is not None
    data = {"output": {"xs": ["\ud800"], "n": 0}}
    assert _reference("true || output.xs.a == 1", data) is None  # cel converts the list whole, and fails
    assert rules.all_true(RuleInput(data)) is None
    assert rules.all_true(RuleInput({"output": {"xs": {"a": 1}, "n": 0}})) is True


@pytest.mark.parametrize(("sources", "data"), [
    (("size(output.xs) >= 0",), {"output": {"xs": [0] * 100_001}}),  # a list longer than rules may see
    (("output.s != ''" + " && 1 < 2" * 140,), {"output": {"s": "a" * 200_000}}),  # too many visits
    (("output.s + '' != 'x'",), {"output": {"s": "a" * (99_999 * 64)}}),  # the combined cel program
    (("size(output) == 3 && output.n + 0 == 1",), {"output": {"n": 1, "big": [0] * 99_000, "k" * 200_000: 0}}),
])
def test_data_over_a_rules_bounds_is_refused_as_by_the_rule_alone(sources: tuple[str, ...],
                                                                   data: dict[str, Any]) -> None:
    assert [_reference(src, data) for src in sources] == [None] * len(sources)  # refused: over the bounds
    assert rule_set(sources).all_true(RuleInput(data)) is None
    assert rule_set(sources).first_true(RuleInput(data)) is None


def test_exists_one_is_a_comprehension_its_variable_shadows_a_root() -> None:
    sources = ("!output.xs.existsOne(step, step.ok != true)",)
    data = {"output": {"xs": [{"ok": False}]}, "step": {"ok": True}}
    assert _reference(sources[0], data) is False
    assert rule_set(sources).all_true(RuleInput(data)) is None
    with pytest.raises(RuleError, match="comprehension"):  # three nested ones over 1,000 elements: 1e9 steps
        compile_rule("output.a.existsOne(x, output.a.existsOne(y, output.a.existsOne(z, x == y)))")


def test_the_shortcuts_answer_the_common_case() -> None:
    data = RuleInput({"output": {"n": 3, "step": 5}, "steps": StepOutputs(), "step": {"args": {"n": 5}}})
    assert rule_set(("output.n >= 0", "output.step < 100", "size(steps) <= 50")).all_true(data) is True
    assert rule_set(("step.args.n > 1000", "step.args.n == 5")).first_true(data) == 1
    assert rule_set(("step.args.n > 1000",)).first_true(data) == -1
    # Outside the subset, the combined cel program answers (one call for the set).
    assert rule_set(("output.n + 1 > 0", "has(output.step)")).all_true(data) is True


def test_a_set_with_a_rule_over_its_bounds_takes_no_shortcut() -> None:
    long_rule = " && ".join(["output.n > 0"] * 90)  # over MAX_RULE_CHARS: compile_rule refuses it
    with pytest.raises(RuleError):
        compile_rule(long_rule)
    assert compile_subset(long_rule, 10**9) is not None  # the subset alone would have answered it
    data = RuleInput({"output": {"n": 3}})
    assert rule_set(("output.n > 0", long_rule)).all_true(data) is None
    assert rule_set((long_rule,)).first_true(data) is None


def test_a_list_longer_than_a_steps_rules_is_not_combined_and_still_answers() -> None:
    sources = tuple(f"step.args.n == {i} && step.tool != '{'x' * 900}'" for i in range(30))  # 28,000 characters
    rules = rule_set(sources)
    assert rules._combined is None  # one cel program of this size is not built (nor rewritten)
    assert rules.first_true(RuleInput({"step": {"args": {"n": 7}, "tool": "t"}})) == 7  # the subset still answers
