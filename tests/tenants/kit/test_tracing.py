"""Traces: a run slice holds its steps, a step its tool and model calls; model calls carry the OpenTelemetry
GenAI attributes; failures are marked with their category; the trace id is on every log line under a span,
and everything is a free no-op when no OTLP endpoint is configured."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tenants.kit import tracing
from tenants.kit.logging import bind_work, configure_logging, get_logger
from tenants.kit.settings import Settings


class StepFailedLike(Exception):
    """What the engine raises: an exception with a failure ``category`` and a ``reason``."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category, self.reason = category, reason


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(Settings(), "worker", exporter=exporter, install_global=False)
    yield exporter
    tracing.shutdown_tracing()


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_run_slice_holds_its_step_which_holds_its_tool_and_model_calls(spans: InMemorySpanExporter) -> None:
    with tracing.run_slice_span(tenant_id="tnt_1", run_id="run_1", agent="greeter", agent_version=3):
        with tracing.step_span(step_id="fetch", kind="tool", item_index=0, step_index=0), \
                tracing.tool_span(tool="crm.get_invoice", side_effect=False):
            pass
        with tracing.step_span(step_id="draft", kind="llm", item_index=0, step_index=1, attempt=2), \
                tracing.model_span(provider="openai", model="gpt-4o-mini", max_tokens=256, temperature=0.0,
                                   alias="fast") as model:
            model.model_response(response_model="gpt-4o-mini-2024-07-18", input_tokens=120, output_tokens=40,
                                 finish_reasons=["stop"], cost_usd=Decimal("0.00042"))
    found = _by_name(spans)
    assert set(found) == {"invoke_agent greeter", "step fetch", "execute_tool crm.get_invoice", "step draft",
                          "chat gpt-4o-mini"}
    root = found["invoke_agent greeter"]
    assert root.parent is None
    trace_ids = {s.context.trace_id for s in found.values()}
    assert trace_ids == {root.context.trace_id}, "one trace per run slice"
    assert _parent_of(found["step fetch"]) == root.context.span_id
    assert _parent_of(found["step draft"]) == root.context.span_id
    assert _parent_of(found["execute_tool crm.get_invoice"]) == found["step fetch"].context.span_id
    assert _parent_of(found["chat gpt-4o-mini"]) == found["step draft"].context.span_id

    assert dict(root.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "midwatch", "gen_ai.agent.name": "greeter",
        "gen_ai.agent.id": "tnt_1/greeter", "gen_ai.agent.version": 3, "midwatch.tenant_id": "tnt_1",
        "midwatch.run_id": "run_1"}
    model_span = found["chat gpt-4o-mini"]
    assert model_span.kind == SpanKind.CLIENT
    attrs = dict(model_span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.max_tokens"] == 256 and attrs["gen_ai.request.temperature"] == 0.0
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.usage.input_tokens"] == 120 and attrs["gen_ai.usage.output_tokens"] == 40
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["midwatch.cost_usd"] == pytest.approx(0.00042)
    tool = dict(found["execute_tool crm.get_invoice"].attributes or {})
    assert tool["gen_ai.operation.name"] == "execute_tool" and tool["gen_ai.tool.name"] == "crm.get_invoice"
    step = dict(found["step draft"].attributes or {})
    assert step == {"midwatch.step.id": "draft", "midwatch.step.kind": "llm", "midwatch.item_index": 0,
                    "midwatch.step.index": 1, "midwatch.attempt": 2}


def test_a_failing_step_is_marked_with_its_failure_category(spans: InMemorySpanExporter) -> None:
    with pytest.raises(StepFailedLike), tracing.run_slice_span(tenant_id="t", run_id="r", agent="a"), \
            tracing.step_span(step_id="draft", kind="llm", item_index=4):
        raise StepFailedLike("validation", "rule 'size(output.text) < 5' rejected the output")
    found = _by_name(spans)
    for name in ("step draft", "invoke_agent a"):  # the exception left both spans
        span = found[name]
        assert span.status.status_code == StatusCode.ERROR
        assert dict(span.attributes or {})["midwatch.failure_category"] == "validation"
        assert dict(span.attributes or {})["error.type"] == "validation"
    assert "rejected the output" in (found["step draft"].status.description or "")
    with tracing.step_span(step_id="send", kind="tool", item_index=0) as handle:
        handle.fail("dependency", "HTTP 503 after 3 attempts")  # a failure the engine handles itself
    send = _by_name(spans)["step send"]
    assert send.status.status_code == StatusCode.ERROR
    assert dict(send.attributes or {})["midwatch.failure_category"] == "dependency"


def test_the_trace_id_is_on_every_log_line_under_a_span_and_continues_across_the_broker(
        spans: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    configure_logging("info", "json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream))
    try:
        with tracing.run_slice_span(tenant_id="t", run_id="r", agent="a") as run, bind_work(tenant_id="t", run_id="r"):
            inside = tracing.current_trace_id()
            get_logger("engine").info("step_started")
            carrier = tracing.inject_context()
        get_logger("engine").info("outside")
    finally:
        configure_logging("warning", "console")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside == run.trace_id and inside is not None and len(inside) == 32
    assert first["trace_id"] == inside and first["run_id"] == "r" and first["tenant_id"] == "t"
    assert len(first["span_id"]) == 16
    assert "trace_id" not in second
    assert carrier["traceparent"].split("-")[1] == inside
    with tracing.run_slice_span(tenant_id="t", run_id="r", agent="a", parent=carrier) as next_slice:
        assert next_slice.trace_id == inside, "the next slice continues the submitting trace"


def test_tracing_is_off_without_an_endpoint_and_costs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure_tracing(Settings(), "worker") is False
    assert not tracing.tracing_enabled()
    first = tracing.step_span(step_id="a", kind="tool", item_index=0)
    assert first is tracing.tool_span(tool="x") is tracing.model_span(provider="openai", model="m"), \
        "off, every helper returns the one shared no-op"
    with first as handle:
        handle.model_response(input_tokens=1)
        handle.fail("dependency")
        assert not handle.recording and handle.trace_id is None
        assert tracing.current_trace_id() is None
    assert tracing.inject_context() == {}


def test_an_otlp_endpoint_setting_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(otlp_endpoint="http://127.0.0.1:4318")
    assert tracing.otlp_endpoint(settings) == "http://127.0.0.1:4318"
    try:
        assert tracing.configure_tracing(settings, "api", install_global=False) is True
        assert tracing.tracing_enabled()  # (no span: nothing listens on that port)
    finally:
        tracing.shutdown_tracing()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.otlp_endpoint(Settings()) == "http://collector:4318"
    with pytest.raises(ValueError, match="otlp_endpoint"):
        Settings(otlp_endpoint="collector:4318")
