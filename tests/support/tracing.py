"""Tracing into memory for a test: the ledger's spans, read back with OpenTelemetry's in-memory
exporter, and tracing off again afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledger.telemetry import tracing
from ledger.telemetry.spans import Tracing

_PROVIDERS: dict[int, TracerProvider] = {}


@contextmanager
def traced_into_memory() -> Iterator[InMemorySpanExporter]:
    """The ledger's tracing on, into the exporter yielded; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _PROVIDERS[id(exporter)] = provider
    tracing.install(Tracing(provider))
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()
        del _PROVIDERS[id(exporter)]


def exporter_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    """The provider that exports into `exporter`: a test's own spans (a caller's) go there too."""
    return _PROVIDERS[id(exporter)]


def named(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def linked_to(span: ReadableSpan, other: ReadableSpan) -> bool:
    """Whether `span` has a link to `other`."""
    assert other.context is not None
    return any(
        link.context.trace_id == other.context.trace_id and link.context.span_id == other.context.span_id
        for link in span.links
    )


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert parent.context is not None
    return span.parent is not None and span.parent.span_id == parent.context.span_id
