"""CEL rules: bounded at compile time, evaluated to a strict bool."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from runner.errors import RuleError
from runner.rules import MAX_RULE_CHARS, CompiledRule, check_rule_syntax, compile_rule

DATA: dict[str, Any] = {
    "input": {"amount": 12_000},
    "item": {"invoice_id": "INV-7"},
    "steps": {"fetch": {"output": {"email": "ap@acme.test"}}},
    "output": {"text": "Dear customer, please pay."},
    "step": {"id": "send", "tool": "mail.send_reminder"},
}


def test_rule_that_holds_evaluates_true() -> None:
    rule = compile_rule("size(output.text) < 2000 && !output.text.contains('password')")

    assert rule.evaluate(DATA) is True


def test_rule_that_fails_evaluates_false() -> None:
    assert compile_rule("step.tool == 'mail.send_reminder' && input.amount < 10000").evaluate(DATA) is False


def test_rules_see_all_five_roots() -> None:
    rule = compile_rule(
        "input.amount > 0 && item.invoice_id == 'INV-7' && "
        "steps.fetch.output.email.endsWith('.test') && output.text != '' && step.id == 'send'"
    )

    assert rule.evaluate(DATA) is True


def test_non_bool_result_is_a_rule_error() -> None:
    with pytest.raises(RuleError, match="not bool"):
        compile_rule("size(output.text)").evaluate(DATA)


def test_missing_key_is_a_rule_error_not_a_keyerror() -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule("output.missing == 1").evaluate(DATA)

    assert caught.value.code == "rule_error"


def test_undefined_variable_and_type_mismatch_are_rule_errors() -> None:
    with pytest.raises(RuleError):
        compile_rule("nobody == 1").evaluate(DATA)
    with pytest.raises(RuleError):
        compile_rule("output.text + 1 == 2").evaluate(DATA)


def test_decimal_amounts_are_converted_before_evaluation() -> None:
    data = {"input": {"amount": Decimal("10000.50"), "count": Decimal("3")}, "output": {"tags": ("a", "b")}}

    assert compile_rule("input.amount > 10000 && input.count == 3").evaluate(data) is True
    assert compile_rule("size(output.tags) == 2 && 'a' in output.tags").evaluate(data) is True


def test_dates_become_iso_strings_and_datetimes_stay_timestamps() -> None:
    data = {"output": {"due": dt.date(2025, 1, 31), "at": dt.datetime(2025, 1, 31, tzinfo=dt.UTC)}}

    rule = compile_rule("output.due == '2025-01-31' && output.at < timestamp('2026-01-01T00:00:00Z')")

    assert rule.evaluate(data) is True


def test_syntax_error_message_has_line_and_column() -> None:
    with pytest.raises(RuleError, match=r"at 2:\d+"):
        compile_rule("output.ok &&\n  (output.text ||")


def test_check_rule_syntax_returns_none_or_the_message() -> None:
    assert check_rule_syntax("1 < 2") is None
    message = check_rule_syntax("1 <")
    assert message is not None and "1:4" in message


@pytest.mark.parametrize(
    ("src", "why"),
    [
        ("true || " * 130 + "true", "characters"),
        ("(" * 13 + "true" + ")" * 13, "nests"),
        ("[[[[[[[[[[[[[1]]]]]]]]]]]]] != []", "nests"),
        ("[1].map(x, x).filter(y, y > 0).exists(z, z == 1)", "comprehension"),
        ("[1].all(a, [2].all(b, [3].exists(c, c == a)))", "comprehension"),
        ("", "empty"),
    ],
)
def test_rules_over_the_bounds_are_refused_before_compiling(src: str, why: str) -> None:
    with pytest.raises(RuleError, match=why):
        compile_rule(src)


def test_bounds_ignore_brackets_and_macro_names_inside_strings() -> None:
    src = "output.text != '((((((((((((((( .map( .map( .map(' && output.text != \"[[[[[[[[[[[[[[\""

    assert compile_rule(src).evaluate(DATA) is True


def test_two_comprehensions_and_twelve_levels_are_still_allowed() -> None:
    assert compile_rule("[1, 2].map(x, x * 2).all(y, y > 0)").evaluate({}) is True
    assert compile_rule("(" * 12 + "true" + ")" * 12).evaluate({}) is True
    exactly_at_limit = "'" + "a" * (MAX_RULE_CHARS - 2) + "'"
    assert compile_rule(exactly_at_limit).source == exactly_at_limit


def test_compiled_rules_are_cached_by_source() -> None:
    first = compile_rule("output.text != ''")

    assert compile_rule("output.text != ''") is first
    assert isinstance(first, CompiledRule) and first.source == "output.text != ''"


# ---- cost bounded by the data (issue 16, finding 3) and only what a rule references is converted ----

def test_nested_comprehensions_over_a_large_list_are_refused_before_they_run() -> None:
    import time

    from runner.rules import MAX_RULE_VISITS

    rule = compile_rule("output.xs.all(a, output.xs.all(b, a + b >= 0))")
    data = {"output": {"xs": list(range(6000))}}
    started = time.monotonic()
    with pytest.raises(RuleError, match="could visit about") as caught:
        rule.evaluate(data)
    assert time.monotonic() - started < 1, "the rule ran instead of being refused"
    assert f"{MAX_RULE_VISITS:,}" in str(caught.value)
    assert rule.evaluate({"output": {"xs": list(range(100))}}) is True  # 10,000 pairs: within the budget


@pytest.mark.parametrize("src", [
    "output.xs.all(x, x >= 0)",
    "output.xs.exists(x, x == 29999)",
    "output.xs.all(x, x in [0, 1] || x > -1)",
    "size(output.xs) == 30000",
])
def test_a_single_pass_over_a_large_list_is_allowed(src: str) -> None:
    assert compile_rule(src).evaluate({"output": {"xs": list(range(30_000))}}) is True


@pytest.mark.parametrize("src", [
    "output.xs.all(x, x in output.xs)",  # membership scans the list: n * n
    "output.xs.all(x, x == output)",  # the whole output compared for every element
    "output.xs.map(a, output.xs).all(l, l == l)",  # a built list is bounded by everything referenced
    "output.rows.all(r, r.all(x, x in r))",  # an iteration variable: the largest list anywhere
])
def test_hidden_quadratic_work_is_counted(src: str) -> None:
    data = {"output": {"xs": list(range(2000)), "rows": [list(range(2000))]}}
    with pytest.raises(RuleError, match="could visit"):
        compile_rule(src).evaluate(data)


def test_a_list_longer_than_any_rule_may_see_is_refused() -> None:
    from runner.rules import MAX_COLLECTION

    with pytest.raises(RuleError, match="at most"):
        compile_rule("size(output.xs) > 0").evaluate({"output": {"xs": [0] * (MAX_COLLECTION + 1)}})


def test_only_the_roots_a_rule_names_are_converted_once_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from runner import rules

    converted: list[Any] = []
    real = rules._to_cel
    monkeypatch.setattr(rules, "_to_cel", lambda value: converted.append(value) or real(value))
    steps = {f"s{i}": {"output": {"n": i}} for i in range(20)}
    shared = rules.RuleInput({"steps": steps, "output": {"n": 1}, "input": {"n": 2}})
    assert compile_rule("output.n == 1").evaluate(shared) is True
    assert compile_rule("output.n < input.n").evaluate(shared) is True
    assert compile_rule("output.n > 0").evaluate(shared) is True
    roots = [v for v in converted if isinstance(v, dict)]  # _to_cel also recurses into the values
    assert roots == [{"n": 1}, {"n": 2}], "steps was converted although no rule names it, or a root twice"
    assert compile_rule("output.n == 1").roots == ("output",)


def _outputs(entries: dict[str, Any]) -> Any:
    from runner.rules import StepOutputs

    steps = StepOutputs()
    for key, entry in entries.items():
        steps[key] = entry
    return steps


STEP_ENTRIES: dict[str, Any] = {
    "fetch": {"output": {"rows": [{"n": i, "name": "x" * (i * 40)} for i in range(30)], "total": Decimal("2.5")}},
    "draft": {"output": {"text": "hello " * 50, "tags": ("a", "b"), "seen": {3, 1, 2}}},
    "empty": {"output": {}},
}


@pytest.mark.parametrize("rule", ["size(steps) <= 50",
                                  "steps.fetch.output.rows.all(r, r.n >= 0)",
                                  "steps.fetch.output.rows.all(r, steps.fetch.output.rows.exists(s, s.n == r.n))",
                                  "steps.draft.output.text.size() > 0 && steps.fetch.output.total > 2.0"])
def test_step_outputs_reused_across_steps_give_the_estimates_and_verdicts_of_the_plain_map(rule: str) -> None:
    """The engine's StepOutputs keep each entry's sizes and CEL form between steps; what a rule is charged
    and what it answers must be exactly what the plain map gives."""
    from runner.rules import RuleInput

    compiled = compile_rule(rule)
    steps = _outputs(STEP_ENTRIES)
    for _ in range(2):  # the second step reuses the first one's work
        memo = RuleInput({"steps": steps})
        plain = RuleInput({"steps": dict(STEP_ENTRIES)})
        assert compiled.estimate(memo) == compiled.estimate(plain)
        assert compiled.evaluate(memo) == compiled.evaluate(plain)
        assert memo.root_stats("steps") == plain.root_stats("steps")


def test_a_replaced_step_output_is_measured_again() -> None:
    """A step that runs again replaces its entry: the new output's size is what the next rule is charged."""
    from runner.rules import MAX_RULE_VISITS, RuleInput

    rule = compile_rule("steps.fetch.output.xs.all(a, steps.fetch.output.xs.all(b, a + b >= 0))")
    steps = _outputs({"fetch": {"output": {"xs": [1, 2, 3]}}})
    assert rule.evaluate(RuleInput({"steps": steps}))
    steps["fetch"] = {"output": {"xs": list(range(6000))}}
    with pytest.raises(RuleError) as caught:
        rule.evaluate(RuleInput({"steps": steps}))
    assert f"{MAX_RULE_VISITS:,}" in str(caught.value)


# ---- what a rule is handed: only what it reads ------------------------------------------------

VIEW_DATA: dict[str, Any] = {
    "input": {"amount": 12_000, "tags": ["a", "b"], "nested": {"deep": {"x": 1}, "other": "y"}},
    "item": {"invoice_id": "INV-7", "lines": [{"n": 1}, {"n": 2}], "empty": {}},
    "steps": {"fetch": {"output": {"email": "ap@acme.test", "rows": [1, 2, 3]}}, "draft": {"output": {"t": "hi"}}},
    "output": {"n": 3, "text": "step and output are words here", "xs": [1, 2, 3], "m": {"k": 1}},
    "step": {"id": "send", "tool": "mail.send", "args": {"n": 5, "to": "ap@acme.test"}},
}

VIEW_RULES = [
    "output.n > 0", "output.n > 0 && input.amount < 20000", "has(output.n)", "has(output.missing)",
    "!has(steps.fetch.output.phone)", "has(steps.nope)", "size(steps) == 2", "steps.size() == 2",
    "size(steps) == 2 && steps.fetch.output.email.endsWith('.test')", "size(output.xs) == 3", "output.xs.size() == 3",
    "output.xs.all(x, x > 0)", "output.xs.exists(x, x == output.n)", "output.xs.map(x, x * 2)[2] == 6",
    "output['n'] == 3", "output.m.k == 1", "'k' in output.m", "3 in output.xs", "output.missing == 1",
    "output.text.contains('step')", "input.nested.deep.x == 1", "input.nested == {'deep': {'x': 1}, 'other': 'y'}",
    "item.lines[1].n == 2", "item.lines.n == 1", "size(item.empty) == 0", "item.invoice_id.startsWith('INV')",
    "step.tool == 'mail.send' && step.args.n > 1000000", "size(step.args) == 2", "size(output) == 4",
    "output.xs.all(output, output > 0)", "[output.n, input.amount].all(v, v > 0)", "output.text == 'output.n'",
    "size(output.text) > 3", "output.n.size() == 1", "steps.fetch.output.rows.filter(r, r > 1).size() == 2",
    "size(steps.fetch.output.rows) == 3 && steps.fetch.output.rows[0] == 1", "output . n == 3",
]


def _ground_truth(src: str) -> Any:
    """What cel answers over the whole data (each root converted whole), or the exception type it raises."""
    import cel

    try:
        return cel.compile(src).execute({root: value for root, value in VIEW_DATA.items()})
    except Exception as exc:
        return type(exc).__name__


@pytest.mark.parametrize("src", VIEW_RULES)
def test_a_rule_answers_over_what_it_reads_as_over_the_whole_data(src: str) -> None:
    """Rules are handed only the parts of each root they read; every answer, error included, must be the
    one cel gives over the whole data."""
    expected = _ground_truth(src)
    try:
        got: Any = compile_rule(src).evaluate(VIEW_DATA)
    except RuleError as exc:
        got = str(exc)
    if isinstance(expected, str):  # cel raised: the rule must fail as well (a non-bool result also fails)
        assert isinstance(got, str) and "failed" in got, (src, expected, got)
    elif type(expected) is not bool:
        assert isinstance(got, str) and "not bool" in got, (src, expected, got)
    else:
        assert got is expected, (src, expected, got)


def test_a_rule_is_handed_only_the_fields_it_reads() -> None:
    from runner.rules import RuleInput

    data = RuleInput({"output": {"n": 1, "blob": "x" * 10_000, "rows": list(range(5000))},
                      "steps": {f"s{i}": {"output": {"n": i, "text": "y" * 100}} for i in range(30)}})
    field = compile_rule("output.n > 0")
    assert [data.view(root, need) for root, need in field._needs] == [{"n": 1}]
    counted = compile_rule("size(steps) <= 50")
    assert [data.view(root, need) for root, need in counted._needs] == [[None] * 30]
    both = compile_rule("size(steps) == 30 && steps.s3.output.n == 3")
    (view,) = [data.view(root, need) for root, need in both._needs]
    assert view["s3"] == {"output": {"n": 3}} and view["s4"] is None and len(view) == 30
    whole = compile_rule("output.rows.all(r, r >= 0) && output['n'] == 1")
    assert [data.view(root, need) for root, need in whole._needs] == [data._data["output"]]
    assert field.evaluate(data) and counted.evaluate(data) and both.evaluate(data) and whole.evaluate(data)


def test_a_list_the_rule_does_not_read_does_not_count_against_it() -> None:
    """The collection bound applies to what a rule is handed: a huge list beside the field it reads is fine,
    the same list read by the rule is refused."""
    from runner.rules import MAX_COLLECTION

    data = {"output": {"n": 1, "xs": [0] * (MAX_COLLECTION + 1)}}
    assert compile_rule("output.n == 1").evaluate(data) is True
    with pytest.raises(RuleError, match="at most"):
        compile_rule("output.xs[0] == 0").evaluate(data)


# ---- what hides in comments, strings and whitespace ----------------------------------------------

@pytest.mark.parametrize(("src", "data", "expected"), [
    ("output.a == 1 // don't\n&& output == {'a': 1}", {"output": {"a": 1, "b": 2}}, False),
    ("output.a == 1 // \"quoted\n&& size(output) == 1", {"output": {"a": 1, "b": 2}}, False),
    ("(// size(\noutput.xs) == [1, 2, 3]", {"output": {"xs": [1, 2, 3]}}, True),
    ("output . n == 3 && output.\n  m.k == 1", {"output": {"n": 3, "m": {"k": 1}, "z": 0}}, True),
    ("output.a == 1 // café", {"output": {"a": 1}}, True),
])
def test_comments_and_whitespace_do_not_change_what_a_rule_reads(src: str, data: dict[str, Any],
                                                                  expected: bool) -> None:
    """A quote or a ``size(`` inside a comment once made a rule read less than it does: its answer changed."""
    assert compile_rule(src).evaluate(data) is expected


def test_comprehensions_hidden_by_a_comment_or_a_line_break_are_still_counted() -> None:
    from runner.rules import MAX_RULE_VISITS

    with pytest.raises(RuleError, match="comprehension"):
        compile_rule("// '\noutput.xs.all(a, output.xs.all(b, output.xs.all(c, a+b+c >= 0)))")
    nested = compile_rule("output.xs.\nall(a, output.xs.\nall(b, a + b >= 0))")
    with pytest.raises(RuleError, match=f"{MAX_RULE_VISITS:,}"):
        nested.evaluate({"output": {"xs": [0] * 3000}})


@pytest.mark.parametrize("src", [
    " || ".join(["'x'.matches('\\\\w{200}')"] * 2),
    " || ".join(["'x'.matches('a')"] * 5),
    "'x'.matches(output.pattern)",
    "'x'.matches('a' + output.pattern)",
    "matches('x', '(\\\\w{10}){10}')",
    "'x'.matches('a{,40}')",
    "'x'.matches('a{0}\\\\w{40}')",
])
def test_costly_or_dynamic_patterns_are_refused_at_upload(src: str) -> None:
    """cel compiles a pattern on every evaluation: 36 x '\\w{200}' took 2.4 s per evaluation."""
    assert check_rule_syntax(src) is not None


def test_a_modest_literal_pattern_is_accepted() -> None:
    rule = compile_rule("output.email.matches('^[a-z]+@[a-z]+\\\\.test$') && 'ab'.matches(r'a{1,2}b')")
    assert rule.evaluate({"output": {"email": "ap@acme.test"}}) is True
