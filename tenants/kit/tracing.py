"""OpenTelemetry traces: on when an OTLP endpoint is configured, free when it is not.

:func:`configure_tracing` turns tracing on for the process when ``MIDWATCH_OTLP_ENDPOINT`` (or the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set. Off, every helper returns
one shared no-op context manager: no SDK object, no span, no attribute dictionary is built.

Span helpers (context managers yielding a :class:`SpanHandle`), following the OpenTelemetry GenAI semantic
conventions where one applies::

    run_slice_span   invoke_agent {agent}        one worker time slice of a run (the agent invocation)
      step_span      step {step_id}              one step of one item (its attempts, validation, checkpoint)
        tool_span    execute_tool {tool}         one tool call
        model_span   chat {model}                one model call: tokens, finish reasons, cost

An exception leaving a span marks it failed; an exception with a ``category`` attribute (``StepFailed``)
sets ``midwatch.failure_category`` and ``error.type`` to it. :func:`current_trace_id` gives the active
trace id (32 hex digits) to store on decision events; the logging chain adds it to every log line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from tenants.kit.settings import Settings

__all__ = [
    "SpanHandle",
    "configure_tracing",
    "current_span_id",
    "current_trace_id",
    "inject_context",
    "model_span",
    "run_slice_span",
    "server_span",
    "shutdown_tracing",
    "step_span",
    "tool_span",
    "tracing_enabled",
]

TRACES_PATH = "/v1/traces"
# OpenTelemetry's well-known gen_ai.provider.name values for the providers Midwatch speaks to.
_PROVIDER_NAMES = {"openai": "openai", "openai_compat": "openai", "anthropic": "anthropic"}

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


def otlp_endpoint(settings: Settings) -> str:
    """Where spans go: ``MIDWATCH_OTLP_ENDPOINT`` or the standard OTEL variables; empty when tracing is off."""
    return (settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))


def configure_tracing(settings: Settings, process: str, *, exporter: SpanExporter | None = None,
                      install_global: bool = True) -> bool:
    """Turn tracing on for this process if an endpoint is configured (or ``exporter`` is given, in tests).

    ``process`` (api, worker, scheduler, embedded) becomes ``service.name`` ``midwatch-<process>``.
    Returns whether tracing is on. Calling it again replaces the previous configuration.
    """
    global _tracer, _provider
    shutdown_tracing()
    endpoint = otlp_endpoint(settings)
    if exporter is None and not endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({
        "service.name": f"midwatch-{process}", "service.namespace": "midwatch", "service.version": _version()}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if settings.otlp_endpoint:  # a base URL, like OTEL_EXPORTER_OTLP_ENDPOINT
            base = settings.otlp_endpoint.rstrip("/")
            otlp = OTLPSpanExporter(endpoint=base if base.endswith(TRACES_PATH) else base + TRACES_PATH)
        else:  # the exporter reads the standard variables itself (including headers and TLS settings)
            otlp = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(otlp))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if install_global:
        trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("midwatch", _version())
    return True


def shutdown_tracing() -> None:
    """Flush pending spans and turn tracing off (process exit, tests)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def tracing_enabled() -> bool:
    """Whether spans are recorded in this process."""
    return _tracer is not None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("midwatch")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0"


def current_trace_id() -> str | None:
    """The active trace id as 32 lowercase hex digits, or None (tracing off or no span active)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def current_span_id() -> str | None:
    """The active span id as 16 lowercase hex digits, or None."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else None


def inject_context() -> dict[str, str]:
    """The active trace context as W3C headers (``traceparent``), to carry in a broker message; {} when off."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


class SpanHandle:
    """What a span helper yields: add attributes, record a failure or a model response. A no-op when off."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span | None) -> None:
        self._span = span

    @property
    def recording(self) -> bool:
        return self._span is not None

    @property
    def trace_id(self) -> str | None:
        """This span's trace id (32 hex digits), or None when tracing is off."""
        if self._span is None:
            return None
        return format(self._span.get_span_context().trace_id, "032x")

    def set(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes by their dotted names (``{"midwatch.tool.host": host}``); ``None`` values are skipped."""
        if self._span is not None:
            for key, value in attributes.items():
                if value is not None:
                    self._span.set_attribute(key, _attr(value))

    def fail(self, category: str | None, reason: str | None = None) -> None:
        """Mark the span failed with a Midwatch failure category (dependency, validation, ...)."""
        if self._span is None:
            return
        if category:
            self._span.set_attribute("midwatch.failure_category", category)
            self._span.set_attribute("error.type", category)
        self._span.set_status(Status(StatusCode.ERROR, (reason or category or "failed")[:500]))

    def model_response(self, *, response_model: str | None = None, input_tokens: int | None = None,
                       output_tokens: int | None = None, finish_reasons: Sequence[str] = (),
                       cost_usd: Decimal | float | None = None) -> None:
        """Record what a model call returned (GenAI ``gen_ai.response.*`` and ``gen_ai.usage.*``)."""
        if self._span is None:
            return
        span = self._span
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", int(input_tokens))
        if output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", int(output_tokens))
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", [str(r) for r in finish_reasons])
        if cost_usd is not None:
            span.set_attribute("midwatch.cost_usd", float(cost_usd))


def _attr(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


class _NoopSpan:
    """The one context manager every helper returns while tracing is off."""

    __slots__ = ()
    _handle = SpanHandle(None)

    def __enter__(self) -> SpanHandle:
        return self._handle

    def __exit__(self, *_exc: object) -> None:
        return None


_NOOP = _NoopSpan()


class _Span:
    __slots__ = ("_attributes", "_kind", "_name", "_parent", "_scope", "_span")

    def __init__(self, name: str, kind: SpanKind, attributes: dict[str, Any],
                 parent: Mapping[str, str] | None = None) -> None:
        self._name = name
        self._kind = kind
        self._attributes = {k: _attr(v) for k, v in attributes.items() if v is not None}
        self._parent = parent
        self._span: trace.Span | None = None
        self._scope: Any = None

    def __enter__(self) -> SpanHandle:
        assert _tracer is not None
        ctx = extract(dict(self._parent)) if self._parent else None
        self._span = _tracer.start_span(self._name, context=ctx, kind=self._kind, attributes=self._attributes)
        self._scope = otel_context.attach(trace.set_span_in_context(self._span))
        return SpanHandle(self._span)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        span = self._span
        assert span is not None
        try:
            if exc is not None and not isinstance(exc, GeneratorExit):
                category = getattr(exc, "category", None)
                span.set_attribute("error.type", str(category) if category else type(exc).__name__)
                if category:
                    span.set_attribute("midwatch.failure_category", str(category))
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(getattr(exc, "reason", None) or exc)[:500]))
        finally:
            otel_context.detach(self._scope)
            span.end()


def run_slice_span(*, tenant_id: str, run_id: str, agent: str, agent_version: int | None = None,
                   parent: Mapping[str, str] | None = None) -> _Span | _NoopSpan:
    """One worker time slice of a run: the GenAI ``invoke_agent`` span. ``parent``: the carrier
    :func:`inject_context` produced where the run was submitted (its trace continues here)."""
    if _tracer is None:
        return _NOOP
    return _Span(f"invoke_agent {agent}", SpanKind.INTERNAL, {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "midwatch", "gen_ai.agent.name": agent,
        "gen_ai.agent.id": f"{tenant_id}/{agent}", "gen_ai.agent.version": agent_version,
        "midwatch.tenant_id": tenant_id, "midwatch.run_id": run_id}, parent)


def step_span(*, step_id: str, kind: str, item_index: int, step_index: int | None = None,
              attempt: int = 1) -> _Span | _NoopSpan:
    """One step of one item: its tool or model calls, validation and checkpoint."""
    if _tracer is None:
        return _NOOP
    return _Span(f"step {step_id}", SpanKind.INTERNAL, {
        "midwatch.step.id": step_id, "midwatch.step.kind": kind, "midwatch.item_index": item_index,
        "midwatch.step.index": step_index, "midwatch.attempt": attempt})


def tool_span(*, tool: str, side_effect: bool = False, idempotency_key: str | None = None,
              attempt: int | None = None) -> _Span | _NoopSpan:
    """One tool call: the GenAI ``execute_tool`` span."""
    if _tracer is None:
        return _NOOP
    return _Span(f"execute_tool {tool}", SpanKind.INTERNAL, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.type": "extension",
        "midwatch.side_effect": side_effect, "midwatch.idempotency_key": idempotency_key,
        "midwatch.attempt": attempt})


def model_span(*, provider: str, model: str, operation: str = "chat", max_tokens: int | None = None,
               temperature: float | None = None, alias: str | None = None) -> _Span | _NoopSpan:
    """One model call (GenAI client span ``{operation} {model}``); record the answer with
    :meth:`SpanHandle.model_response`. ``provider`` is Midwatch's provider name (openai, anthropic, sandbox)."""
    if _tracer is None:
        return _NOOP
    system = _PROVIDER_NAMES.get(provider, provider)
    return _Span(f"{operation} {model}", SpanKind.CLIENT, {
        "gen_ai.operation.name": operation, "gen_ai.provider.name": system, "gen_ai.system": system,
        "gen_ai.request.model": model, "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.request.temperature": temperature, "midwatch.model.alias": alias})


def server_span(*, method: str, route: str, headers: Iterable[tuple[bytes, bytes]] = (),
                request_id: str | None = None) -> _Span | _NoopSpan:
    """One API request (server span ``{method} {route}``), continuing the caller's ``traceparent``."""
    if _tracer is None:
        return _NOOP
    carrier = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers
               if k.lower() in (b"traceparent", b"tracestate")}
    return _Span(f"{method} {route}" if route else method, SpanKind.SERVER, {
        "http.request.method": method, "http.route": route or None, "midwatch.request_id": request_id},
        carrier or None)
