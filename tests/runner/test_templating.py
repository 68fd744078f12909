"""`{{ path }}` templates: typed lookups into dicts and lists, never into Python objects."""

from __future__ import annotations

from typing import Any

import pytest

from runner.errors import TemplateError
from runner.templating import references, render, root_of

CONTEXT: dict[str, Any] = {
    "input": {"customer": "ACME"},
    "item": {"invoice_id": "INV-7", "amount": 120},
    "steps": {
        "fetch": {
            "output": {
                "email": "ap@acme.test",
                "items": [{"id": 7, "tags": ["a", "b"]}, {"id": 8}],
                "paid": False,
                "note": None,
            }
        },
        "send-mail": {"output": {"ok": True}},
    },
}


def test_whole_string_template_keeps_the_value_type() -> None:
    assert render("{{ item.amount }}", CONTEXT) == 120
    assert (
        render("  {{ steps.fetch.output.items }} ", CONTEXT) == CONTEXT["steps"]["fetch"]["output"]["items"]
    )
    assert render("{{ steps.fetch.output.paid }}", CONTEXT) is False
    assert render("{{steps.fetch.output.note}}", CONTEXT) is None


def test_embedded_templates_become_text_and_containers_become_json() -> None:
    text = render(
        "Dear {{ input.customer }}, invoice {{ item.invoice_id }}: {{ steps.fetch.output.items[0] }}", CONTEXT
    )

    assert text == 'Dear ACME, invoice INV-7: {"id": 7, "tags": ["a", "b"]}'


def test_render_walks_dicts_and_lists_and_leaves_other_values_alone() -> None:
    args = {"id": "{{ item.invoice_id }}", "ids": ["{{ steps.fetch.output.items[1].id }}", 3], "n": 1.5}

    assert render(args, CONTEXT) == {"id": "INV-7", "ids": [8, 3], "n": 1.5}
    assert args["id"] == "{{ item.invoice_id }}"  # the input is not mutated


def test_indexed_and_hyphenated_paths_resolve() -> None:
    assert render("{{ steps.fetch.output.items[0].tags[1] }}", CONTEXT) == "b"
    assert render("{{ steps.send-mail.output.ok }}", CONTEXT) is True


def test_text_without_templates_is_returned_unchanged() -> None:
    assert render('return JSON like {"a": {"b": 1}}', CONTEXT) == 'return JSON like {"a": {"b": 1}}'


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{{ item.missing }}", "'missing'"),
        ("{{ steps.nope.output }}", "'nope'"),
        ("{{ steps.fetch.output.items[5] }}", "index 5"),
        ("{{ steps.fetch.output.email.domain }}", "not a mapping"),
        ("{{ item[0] }}", "not a list"),
        ("{{ unknown }}", "'unknown'"),
    ],
)
def test_missing_key_or_index_raises_naming_the_path(template: str, named: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template, CONTEXT)

    assert named in str(caught.value)
    assert template.strip("{} ") in str(caught.value)


def test_dunder_paths_are_dict_lookups_never_python_attributes() -> None:
    with pytest.raises(TemplateError, match="'__class__' not found"):
        render("{{ item.__class__ }}", CONTEXT)


def test_objects_are_opaque_even_when_they_have_the_attribute() -> None:
    class Invoice:
        email = "leak@example.test"

    with pytest.raises(TemplateError, match="not a mapping"):
        render("{{ item.email }}", {"item": Invoice()})


@pytest.mark.parametrize(
    "template",
    [
        "{{ }}",
        "hello {{ item.x",
        "{{ item.x | upper }}",
        "{{ item.x + 1 }}",
        "{{ item.x() }}",
        "{{ item['x'] }}",
        "{{ item[-1] }}",
        "{{ {{ item }} }}",
        "{{ 1item }}",
    ],
)
def test_malformed_templates_are_rejected(template: str) -> None:
    with pytest.raises(TemplateError):
        references(template)
    with pytest.raises(TemplateError):
        render(template, CONTEXT)


def test_references_lists_every_template_with_its_field_path() -> None:
    value = {
        "to": "{{ steps.fetch.output.email }}",
        "body": ["Hi {{ input.customer }}, re {{ item.invoice_id }}", "plain"],
        "meta": {"n": 1, "id": "{{ item.invoice_id }}"},
    }

    assert references(value) == [
        ("to", "steps.fetch.output.email"),
        ("body[0]", "input.customer"),
        ("body[0]", "item.invoice_id"),
        ("meta.id", "item.invoice_id"),
    ]
    assert references("{{ item.x }}") == [("", "item.x")]
    assert references(42) == []


def test_reference_error_names_the_field() -> None:
    with pytest.raises(TemplateError, match=r"body\[1\]"):
        references({"body": ["ok", "{{ oops"]})


def test_root_of_splits_a_path_into_segments() -> None:
    assert root_of("steps.fetch.output.email") == ("steps", "fetch", "output", "email")
    assert root_of(" steps.fetch.output.items[0].id ") == ("steps", "fetch", "output", "items", "0", "id")
    with pytest.raises(TemplateError):
        root_of("steps.fetch | x")


def test_rendering_is_cheap_enough_to_run_per_step() -> None:
    import time

    args = {
        "to": "{{ steps.fetch.output.email }}",
        "body": "Hi {{ input.customer }} about {{ item.invoice_id }}",
    }
    start = time.perf_counter()
    for _ in range(10_000):
        render(args, CONTEXT)
    per_call = (time.perf_counter() - start) / 10_000

    assert per_call < 100e-6  # generous for slow CI; compiled templates are cached
