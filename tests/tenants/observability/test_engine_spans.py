"""A real run, traced: the worker's spans nest as invoke_agent → step → execute_tool / chat, the model call
carries the OpenTelemetry GenAI attributes, a failed step names its failure category, and every decision
event of the run stores the trace id, so one id leads from a trace to the decision log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import Harness

SPEC = """\
apiVersion: midwatch/v1
name: traced
scope: {tools: [sandbox.echo]}
input: {items: true}
steps:
  - id: fetch
    tool: sandbox.echo
    args: {n: "{{ item.n }}"}
  - id: draft
    llm: {model: sandbox, prompt: "write for {{ steps.fetch.output.n }}", sandbox: {answer: "hello"}}
    rules: ["size(output.text) < 3"]
    on_invalid: {retry: 0, then: escalate}
"""


def test_a_runs_spans_nest_and_carry_the_genai_attributes(make_harness: Callable[..., Harness]) -> None:
    from runner.actors import run_once
    from tenants.kit.settings import get_settings

    h = make_harness(worker=None)
    tenant = h.onboard()
    h.put_agent(tenant, SPEC)
    run = h.submit(tenant, "traced", {"items": [{"n": 1}]})
    with _traced() as memory:
        assert run_once(get_settings())
        spans = memory.get_finished_spans()
    assert h.run(tenant, run["id"])["state"] == "escalated"  # "hello" breaks the rule: a validation failure
    by_name = {s.name: s for s in spans}
    root = by_name["invoke_agent traced"]
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["midwatch.run_id"] == run["id"] and root.attributes["midwatch.tenant_id"] == tenant.id
    fetch, draft = by_name["step fetch"], by_name["step draft"]
    assert fetch.parent.span_id == root.context.span_id and draft.parent.span_id == root.context.span_id
    tool = by_name["execute_tool sandbox.echo"]
    assert tool.parent.span_id == fetch.context.span_id and tool.attributes["gen_ai.tool.name"] == "sandbox.echo"
    chat = next(s for s in spans if s.name.startswith("chat "))
    assert chat.parent.span_id == draft.context.span_id
    assert chat.attributes["gen_ai.request.model"] and chat.attributes["gen_ai.usage.output_tokens"] >= 1
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert draft.attributes["midwatch.failure_category"] == "validation"
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}  # one trace for the slice
    events = h.events(tenant, run["id"])
    trace_id = format(root.context.trace_id, "032x")
    assert events and all(e["trace_id"] == trace_id for e in events), events


class _traced:
    """Trace this process's engine into memory for the block."""

    def __enter__(self) -> Any:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from tenants.kit.settings import get_settings
        from tenants.kit.tracing import configure_tracing

        self.memory = InMemorySpanExporter()
        configure_tracing(get_settings(), "worker", exporter=self.memory, install_global=False)
        return self.memory

    def __exit__(self, *_exc: object) -> None:
        from tenants.kit.tracing import shutdown_tracing

        shutdown_tracing()
