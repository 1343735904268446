"""The spans the ledger makes once tracing is on (tracing.py imports this module only then): one
place that knows OpenTelemetry, so that the hooks in the HTTP edge, the writer, the storage and
the Kafka intake stay one line each.

The provider is the ledger's own, not OpenTelemetry's global one: a library user's or FastAPI's
global provider is left alone, and a test hands in a provider that exports to memory."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ledger.telemetry.tracing import SERVICE_NAME, TracingMode

INSTRUMENTATION = "ledger"
TRACEPARENT = "traceparent"
# The request ids a batch span lists (its links name each request too, up to OpenTelemetry's own
# OTEL_SPAN_LINK_COUNT_LIMIT, 128 by default).
SPAN_REQUEST_IDS_MAX = 128

Attributes = Mapping[str, Any]


def exporting_provider(mode: TracingMode, process: str) -> TracerProvider:
    """A provider that exports in batches, on a thread of its own, to the console (stdout, one
    JSON object a span) or over OTLP/HTTP to OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT."""
    attributes = {"ledger.process": process}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))
    exporter: SpanExporter
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _context_of(trace_parent: str | None) -> SpanContext | None:
    if not trace_parent:
        return None
    carried = TraceContextTextMapPropagator().extract({TRACEPARENT: trace_parent})
    span_context = get_current_span(carried).get_span_context()
    return span_context if span_context.is_valid else None


def trace_parent_of(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, set_span_in_context(span))
    return carrier.get(TRACEPARENT)


class HttpSpan:
    """An HTTP request's span, current for the request's task until `finished`."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.token = otel_context.attach(set_span_in_context(span))

    def finished(self, method: str, route: str, status: int) -> None:
        otel_context.detach(self.token)
        span = self.span
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(INSTRUMENTATION)

    # -- the HTTP edge ------------------------------------------------------------------------------

    def http_started(self, scope: Mapping[str, Any], request_id: str) -> HttpSpan:
        """A server span for one request, the child of the caller's `traceparent` when it sent one."""
        offered = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                offered = value.decode("latin-1")
                break
        parent = _context_of(offered)
        span = self.tracer.start_span(
            scope["method"],
            context=None if parent is None else set_span_in_context(NonRecordingSpan(parent)),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": scope["method"],
                "url.path": scope["path"],
                "ledger.request_id": request_id,
            },
        )
        return HttpSpan(span)

    # -- across the writer's queue or socket -------------------------------------------------------

    def current_trace_parent(self) -> str | None:
        """The current span as W3C `traceparent` text, or None when no span is current."""
        span = get_current_span()
        return trace_parent_of(span) if span.get_span_context().is_valid else None

    @contextmanager
    def resumed(self, trace_parent: str | None) -> Iterator[None]:
        """Spans started inside are children of the span `trace_parent` names."""
        parent = _context_of(trace_parent)
        if parent is None:
            yield
            return
        token = otel_context.attach(set_span_in_context(NonRecordingSpan(parent)))
        try:
            yield
        finally:
            otel_context.detach(token)

    # -- the writer ---------------------------------------------------------------------------------

    def batch_started(self, callers: Sequence[tuple[str | None, str | None]], events: int) -> Span:
        """A writer batch's span: a root of its own, linked to the span of every caller it serves
        (trace_parent, request id), since one batch serves many requests and a span has one parent."""
        links = []
        for trace_parent, request_id in callers:
            caller = _context_of(trace_parent)
            if caller is not None:
                links.append(Link(caller, None if request_id is None else {"ledger.request_id": request_id}))
        request_ids = [request_id for _, request_id in callers if request_id is not None]
        return self.tracer.start_span(
            "writer batch",
            context=otel_context.Context(),  # not the thread's current span: a batch is a root
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "ledger.batch.events": events,
                "ledger.batch.requests": len(callers),
                "ledger.request_ids": request_ids[:SPAN_REQUEST_IDS_MAX],
            },
        )

    # -- storage and Kafka: spans that are children of the current one ------------------------------

    def start_span(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        links: Sequence[Link] = (),
    ) -> Span:
        return self.tracer.start_span(name, kind=kind, attributes=attributes, links=links)

    @contextmanager
    def span(
        self, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes | None = None
    ) -> Iterator[Span]:
        """A child of the current span for the block (its error, if any, recorded on it)."""
        with self.tracer.start_as_current_span(name, kind=kind, attributes=attributes) as span:
            yield span

    def within_current(self, name: str, attributes: Attributes) -> AbstractContextManager[Any]:
        """A child of the current span for the block; nothing when no span is current, so that
        what runs on its own (the writer's expiry check, every interval) is not a trace each time."""
        if not get_current_span().get_span_context().is_valid:
            return nullcontext()
        return self.span(name, attributes=attributes)

    def links_to(self, trace_parents: Sequence[str]) -> list[Link]:
        return [Link(c) for c in map(_context_of, trace_parents) if c is not None]


def failed(span: Span, error: BaseException | str) -> None:
    span.set_status(Status(StatusCode.ERROR, error if isinstance(error, str) else repr(error)))
