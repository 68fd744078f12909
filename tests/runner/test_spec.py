"""Agent spec v1: parsing reports every error with a precise path; lint and projection advise."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import yaml

from runner.errors import RunnerError, SpecInvalid
from runner.spec import (
    DEFAULT_STEP_SUCCESS,
    AgentSpec,
    ParseResult,
    lint,
    load_spec,
    parse_spec,
    project_reliability,
)

# The PRODUCT.md "Agent spec v1" example; only the draft step's llm mapping is written as a block
# so the line fits.
EXAMPLE_YAML = """\
apiVersion: midwatch/v1
name: invoice-followup
description: Chase overdue invoices politely.
objective:
  success_criteria: "every overdue invoice gets exactly one reminder or an escalation"
  slo: {success_rate: 0.99}
scope:
  tools: [crm.get_invoice, mail.send_reminder]
  egress: [api.example-crm.com, mail.example.com]
  secrets: [crm_token, mail_oauth]
autonomy:
  max_steps: 5
  max_llm_calls: 10
  max_cost_usd: "0.50"
  max_duration_s: 300
  approvals:
    - when: "step.tool == 'mail.send_reminder' && input.amount > 10000"
      route: approver
      timeout_s: 3600
      on_timeout: deny
input:
  items: true           # the run input is a list of records, processed one by one
  schema: {type: object, required: [invoice_id], properties: {invoice_id: {type: string}}}
steps:
  - id: fetch
    tool: crm.get_invoice
    args: {id: "{{ item.invoice_id }}"}
    output_schema: {type: object, required: [amount, email, days_overdue]}
  - id: draft
    llm: {model: careful, fallbacks: [fast], prompt: "Write a short reminder for {{ steps.fetch.output.email }}"}
    rules: ["size(output.text) < 2000", "!output.text.contains('password')"]
    on_invalid: {retry: 2, then: escalate}
  - id: send
    tool: mail.send_reminder
    args: {to: "{{ steps.fetch.output.email }}", body: "{{ steps.draft.output.text }}"}
"""


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE_YAML)
    return data


def mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(example())
    change(data)
    return data


def chain(n: int, **spec_fields: Any) -> dict[str, Any]:
    """A valid spec of `n` sandbox tool steps."""
    return {
        "apiVersion": "midwatch/v1",
        "name": "chain",
        "scope": {"tools": ["sandbox.echo"]},
        "steps": [{"id": f"s{i}", "tool": "sandbox.echo"} for i in range(n)],
        **spec_fields,
    }


def codes(result: ParseResult) -> list[tuple[str, str]]:
    return [(issue.path, issue.code) for issue in result.errors]


def warning_codes(result: ParseResult) -> list[str]:
    return [w.code for w in result.warnings]


# --- the happy path ------------------------------------------------------------------------------


def test_product_example_parses_into_typed_spec() -> None:
    result = parse_spec(EXAMPLE_YAML)

    assert result.errors == []
    spec = result.spec
    assert spec is not None
    assert spec.api_version == "midwatch/v1"
    assert spec.autonomy.max_cost_usd == Decimal("0.50")
    assert isinstance(spec.autonomy.max_cost_usd, Decimal)
    assert [s.kind for s in spec.steps] == ["tool", "llm", "tool"]
    assert spec.steps[1].llm is not None and spec.steps[1].llm.fallbacks == ["fast"]
    assert spec.steps[1].on_invalid.retry == 2
    assert spec.input.items is True
    assert spec.input.schema_ is not None and spec.input.schema_["required"] == ["invoice_id"]
    assert result.projection is not None and result.projection.steps == 3


def test_example_round_trips_through_json_dump() -> None:
    spec = load_spec(EXAMPLE_YAML)
    dumped = spec.model_dump(by_alias=True, mode="json")

    assert dumped["apiVersion"] == "midwatch/v1"
    assert dumped["input"]["schema"]["type"] == "object"
    assert dumped["autonomy"]["max_cost_usd"] == "0.50"
    assert load_spec(dumped) == spec
    assert load_spec(json.dumps(dumped)) == spec
    assert load_spec(json.dumps(dumped).encode()) == spec


def test_python_field_names_are_accepted_as_well_as_wire_names() -> None:
    data = chain(1)
    data["api_version"] = data.pop("apiVersion")
    data["input"] = {"schema_": {"type": "object"}}

    spec = load_spec(data)

    assert spec.input.schema_ == {"type": "object"}


# --- every mistake gets a precise path and a stable code ----------------------------------------

INVALID_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top-level field", mutated(lambda d: d.update(foo=1)), "foo", "unknown_field"),
    (
        "unknown field deep inside a step",
        mutated(lambda d: d["steps"][1]["llm"].update(modle="x")),
        "steps[1].llm.modle",
        "unknown_field",
    ),
    ("missing name", mutated(lambda d: d.pop("name")), "name", "missing"),
    (
        "missing llm prompt",
        mutated(lambda d: d["steps"][1]["llm"].pop("prompt")),
        "steps[1].llm.prompt",
        "missing",
    ),
    ("bad apiVersion", mutated(lambda d: d.update(apiVersion="midwatch/v2")), "apiVersion", "choice"),
    ("name is not a slug", mutated(lambda d: d.update(name="Invoice Followup")), "name", "pattern"),
    ("wrong type", mutated(lambda d: d["autonomy"].update(max_steps="5")), "autonomy.max_steps", "type"),
    ("duplicate step id", mutated(lambda d: d["steps"][2].update(id="fetch")), "steps[2].id", "duplicate"),
    (
        "tool not in scope",
        mutated(lambda d: d["steps"][2].update(tool="mail.send_bulk")),
        "steps[2].tool",
        "not_in_scope",
    ),
    (
        "step with both tool and llm",
        mutated(lambda d: d["steps"][0].update(llm={"model": "m", "prompt": "p"})),
        "steps[0]",
        "one_of",
    ),
    ("step with no kind", mutated(lambda d: d["steps"][0].pop("tool")), "steps[0]", "one_of"),
    (
        "args on an llm step",
        mutated(lambda d: d["steps"][1].update(args={"a": 1})),
        "steps[1].args",
        "invalid",
    ),
    (
        "forward template reference",
        mutated(lambda d: d["steps"][0]["args"].update(to="{{ steps.send.output.id }}")),
        "steps[0].args.to",
        "reference",
    ),
    (
        "reference to a step that does not exist",
        mutated(lambda d: d["steps"][1]["llm"].update(prompt="{{ steps.nope.output }}")),
        "steps[1].llm.prompt",
        "reference",
    ),
    (
        "template filter syntax",
        mutated(lambda d: d["steps"][2]["args"].update(body="{{ steps.draft.output.text | upper }}")),
        "steps[2].args.body",
        "template",
    ),
    (
        "item reference without input.items",
        mutated(lambda d: d["input"].update(items=False)),
        "steps[0].args.id",
        "reference",
    ),
    (
        "bad CEL syntax in a rule",
        mutated(lambda d: d["steps"][1]["rules"].append("size(output.text) <")),
        "steps[1].rules[2]",
        "cel",
    ),
    (
        "bad CEL in an approval",
        mutated(lambda d: d["autonomy"]["approvals"][0].update(when="step.tool ==")),
        "autonomy.approvals[0].when",
        "cel",
    ),
    (
        "rule nested too deeply",
        mutated(lambda d: d["steps"][1]["rules"].append("(" * 13 + "true" + ")" * 13)),
        "steps[1].rules[2]",
        "rule_too_complex",
    ),
    (
        "rule with three comprehensions",
        mutated(lambda d: d["steps"][1]["rules"].append("[1].map(x, x).map(y, y).all(z, z > 0)")),
        "steps[1].rules[2]",
        "rule_too_complex",
    ),
    (
        "invalid output_schema",
        mutated(lambda d: d["steps"][0].update(output_schema={"type": "strin"})),
        "steps[0].output_schema",
        "json_schema",
    ),
    (
        "invalid input schema",
        mutated(lambda d: d["input"].update(schema={"type": 5})),
        "input.schema",
        "json_schema",
    ),
    (
        "negative max_cost_usd",
        mutated(lambda d: d["autonomy"].update(max_cost_usd="-0.01")),
        "autonomy.max_cost_usd",
        "range",
    ),
    (
        "agent tool outside scope",
        mutated(
            lambda d: d["steps"][1].update(
                llm=None, agent={"model": "m", "prompt": "p", "tools": ["crm.get_invoice", "web.search"]}
            )
        ),
        "steps[1].agent.tools[1]",
        "not_in_scope",
    ),
    (
        "egress with a scheme",
        mutated(lambda d: d["scope"].update(egress=["https://mail.example.com"])),
        "scope.egress[0]",
        "pattern",
    ),
    ("no steps", mutated(lambda d: d.update(steps=[])), "steps", "length"),
    (
        "SLO of zero",
        mutated(lambda d: d["objective"]["slo"].update(success_rate=0)),
        "objective.slo.success_rate",
        "range",
    ),
]


@pytest.mark.parametrize(
    ("data", "path", "code"),
    [case[1:] for case in INVALID_SPECS],
    ids=[case[0] for case in INVALID_SPECS],
)
def test_each_invalid_spec_reports_exactly_its_mistake(data: dict[str, Any], path: str, code: str) -> None:
    result = parse_spec(data)

    assert result.spec is None
    assert codes(result) == [(path, code)]
    assert result.warnings == [] and result.projection is None


def test_invalid_spec_table_covers_at_least_fifteen_distinct_codes_or_paths() -> None:
    assert len({(path, code) for _, _, path, code in INVALID_SPECS}) >= 15


def test_cel_syntax_error_message_names_line_and_column() -> None:
    data = mutated(lambda d: d["steps"][1]["rules"].append("size(output.text) < 10 &&\n  (output.ok ||"))

    (issue,) = parse_spec(data).errors

    assert issue.path == "steps[1].rules[2]"
    assert "at 2:" in issue.message


def test_unknown_field_message_names_the_field() -> None:
    (issue,) = parse_spec(mutated(lambda d: d["steps"][0].update(retries=3))).errors

    assert (issue.path, issue.message) == ("steps[0].retries", "unknown field 'retries'")


def test_three_independent_mistakes_are_reported_together() -> None:
    data = mutated(
        lambda d: (
            d.update(colour="blue"),  # pydantic field error
            d["steps"][2].update(tool="mail.send_bulk"),  # cross-field: scope
            d["steps"][1]["rules"].append("output.text.size( >"),  # CEL syntax
        )
    )

    result = parse_spec(data)

    assert sorted(codes(result)) == [
        ("colour", "unknown_field"),
        ("steps[1].rules[2]", "cel"),
        ("steps[2].tool", "not_in_scope"),
    ]


def test_load_spec_raises_spec_invalid_carrying_every_issue() -> None:
    data = mutated(lambda d: (d.pop("name"), d["steps"][2].update(id="fetch")))

    with pytest.raises(SpecInvalid) as caught:
        load_spec(data)

    assert isinstance(caught.value, RunnerError)
    assert caught.value.code == "spec_invalid"
    found = {(i.path, i.code) for i in caught.value.issues}
    assert found == {("name", "missing"), ("steps[2].id", "duplicate")}


def test_max_cost_usd_keeps_decimal_precision_from_strings_and_floats() -> None:
    from_string = load_spec(chain(1, autonomy={"max_cost_usd": "0.50"}))
    from_float = load_spec(chain(1, autonomy={"max_cost_usd": 0.1}))
    from_int = load_spec(chain(1, autonomy={"max_cost_usd": 2}))

    assert from_string.autonomy.max_cost_usd == Decimal("0.50")
    assert str(from_string.autonomy.max_cost_usd) == "0.50"
    assert str(from_float.autonomy.max_cost_usd) == "0.1"  # not 0.1000000000000000055511151231257827
    assert from_int.autonomy.max_cost_usd == Decimal(2)


@pytest.mark.parametrize("bad", [True, "abc", "NaN", "Infinity", [1]])
def test_max_cost_usd_rejects_non_amounts(bad: object) -> None:
    result = parse_spec(chain(1, autonomy={"max_cost_usd": bad}))

    assert [path for path, _ in codes(result)] == ["autonomy.max_cost_usd"]


def test_yaml_syntax_error_is_one_issue_with_the_line_number() -> None:
    text = "apiVersion: midwatch/v1\nname: x\nsteps: [\n  {id: a, tool: sandbox.echo\n"

    result = parse_spec(text)

    (issue,) = result.errors
    assert (issue.path, issue.code) == ("", "syntax")
    assert "line 5" in issue.message


def test_duplicate_yaml_keys_are_a_syntax_error_not_silently_last_wins() -> None:
    (issue,) = parse_spec("apiVersion: midwatch/v1\nname: a\nname: b\n").errors

    assert issue.code == "syntax"
    assert "duplicate key 'name'" in issue.message and "line 3" in issue.message


def test_yaml_python_tags_are_refused() -> None:
    (issue,) = parse_spec("name: !!python/object/apply:os.system ['true']\n").errors

    assert issue.code == "syntax"


@pytest.mark.parametrize("text", ["[1, 2]", "just a string", "", "42"])
def test_top_level_non_mapping_is_one_issue(text: str) -> None:
    result = parse_spec(text)

    assert codes(result) == [("", "type")]


def test_yaml_alias_bomb_is_refused_before_validation() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 10)]

    result = parse_spec("\n".join(lines))

    assert codes(result) == [("", "too_large")]


@pytest.mark.parametrize(
    "data",
    [
        {"steps": "nope"},
        {"steps": [None, 3, "x", {"id": 5, "tool": 7, "args": "x"}]},
        {"scope": "x", "steps": [{"id": "a", "agent": {"tools": "x"}}]},
        {"input": [], "steps": [{"id": "a", "tool": "a.b", "args": {"x": "{{ item }}"}}]},
        {"steps": [{"id": "a", "llm": {"prompt": ["{{ steps }}"]}}]},
        {1: 2},
    ],
)
def test_garbage_shapes_come_back_as_issues_never_exceptions(data: dict[Any, Any]) -> None:
    result = parse_spec(data)

    assert result.spec is None and result.errors


def test_direct_model_validation_also_enforces_cross_field_checks() -> None:
    data = mutated(lambda d: d["steps"][2].update(tool="mail.send_bulk"))

    with pytest.raises(ValueError, match="not in scope"):
        AgentSpec.model_validate(data)


def test_models_are_strict_and_frozen() -> None:
    spec = load_spec(chain(1))

    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]
    assert codes(parse_spec(chain(1, autonomy={"max_steps": 5.0}))) == [("autonomy.max_steps", "type")]


# --- lint ----------------------------------------------------------------------------------------


def test_six_steps_warn_long_chain_but_five_do_not() -> None:
    assert "long_chain" in warning_codes(parse_spec(chain(6)))
    assert "long_chain" not in warning_codes(parse_spec(chain(5)))
    (warning,) = [w for w in lint(load_spec(chain(6))) if w.code == "long_chain"]
    assert "3-5 steps" in warning.message


def test_five_steps_project_77_percent_below_the_default_slo() -> None:
    (warning,) = [w for w in parse_spec(chain(5)).warnings if w.code == "reliability_projection"]

    assert warning.message == (
        "projected end-to-end success 77.4% (5 steps at 95.0% each) is below the SLO 95.0%"
    )


def test_twenty_steps_project_36_percent() -> None:
    projection = project_reliability(load_spec(chain(20)))

    assert projection.steps == 20
    assert projection.projected == pytest.approx(0.95**20)
    assert round(projection.projected, 3) == 0.358
    assert projection.meets_slo is False
    (warning,) = [w for w in lint(load_spec(chain(20))) if w.code == "reliability_projection"]
    assert "35.8%" in warning.message


def test_measured_rates_override_the_default_per_step() -> None:
    spec = load_spec(chain(3))

    projection = project_reliability(spec, measured={"s0": 0.99, "s2": 0.5, "unknown": 0.1})

    assert projection.per_step == {"s0": 0.99, "s1": DEFAULT_STEP_SUCCESS, "s2": 0.5}
    assert projection.projected == pytest.approx(0.99 * 0.95 * 0.5)
    (warning,) = [w for w in lint(spec, measured={"s0": 0.99}) if w.code == "reliability_projection"]
    assert "s0 99.0%" in warning.message and "s1 95.0%" in warning.message


def test_one_step_at_default_meets_the_default_slo() -> None:
    result = parse_spec(chain(1))

    assert result.projection is not None and result.projection.meets_slo
    (warning,) = [w for w in result.warnings if w.code == "reliability_projection"]
    assert warning.message == "projected end-to-end success 95.0% (1 step at 95.0%) meets the SLO 95.0%"


def test_measured_rate_outside_zero_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="within"):
        project_reliability(load_spec(chain(1)), measured={"s0": 1.5})


def test_llm_step_without_schema_or_rules_is_flagged_unvalidated() -> None:
    data = mutated(lambda d: d["steps"][1].pop("rules"))

    warnings = [(w.code, w.path) for w in parse_spec(data).warnings]

    assert ("unvalidated_output", "steps[1]") in warnings
    assert "unvalidated_output" not in warning_codes(parse_spec(EXAMPLE_YAML))


def test_scope_tool_no_step_uses_is_flagged() -> None:
    data = mutated(lambda d: d["scope"]["tools"].append("crm.delete_invoice"))

    warnings = [(w.code, w.path) for w in parse_spec(data).warnings]

    assert ("unused_scope", "scope.tools[2]") in warnings
    assert "unused_scope" not in warning_codes(parse_spec(EXAMPLE_YAML))


def test_agent_loop_tools_count_as_used_scope() -> None:
    data = chain(1, scope={"tools": ["sandbox.echo", "web.search"]})
    data["steps"].append({"id": "think", "agent": {"model": "m", "prompt": "p", "tools": ["web.search"]}})

    result = parse_spec(data)

    assert result.errors == []
    assert "unused_scope" not in warning_codes(result)


def test_items_without_schema_is_flagged() -> None:
    assert "items_without_schema" in warning_codes(parse_spec(mutated(lambda d: d["input"].pop("schema"))))
    assert "items_without_schema" not in warning_codes(parse_spec(EXAMPLE_YAML))
