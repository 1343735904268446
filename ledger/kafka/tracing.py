"""The Kafka intake's spans (tracing on): one per intake batch, from its hand-off to the writer
until the writer answered it, and one per publishing of its results, from the hand-off to the
producer until the broker acknowledged every record, a child of the batch's.

The batch's span is current, on the recording thread, while its events are written (the
recorder runs each batch in the context it was handed over in), so the writer's batch span links
to it. A record that carries a W3C `traceparent` header (its producer traced it) is linked from
the batch's span, up to RECORD_LINKS_MAX."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from ledger.kafka.pipeline import PollBatch
from ledger.kafka.publisher import Delivery
from ledger.kafka.recorder import Recorder, Recording
from ledger.telemetry import tracing

RECORD_LINKS_MAX = 128  # OpenTelemetry's own default limit of links per span


def intake_traced(recorder: Recorder, batch: PollBatch, topic: str) -> tuple[Recording, str | None]:
    """Hands the batch's events to the recorder under a span of its own; the recording, and the
    span's traceparent for its publishing."""
    active = tracing.active
    assert active is not None, "an intake batch traced with tracing off"
    from opentelemetry.trace import SpanKind, use_span

    from ledger.telemetry.spans import failed, trace_parent_of

    offered = [
        value.decode("latin-1")
        for record in batch.event_records
        for name, value in record.headers or ()
        if name == "traceparent" and value is not None
    ]
    span = active.start_span(
        f"process {topic}",
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": batch.records,
            "ledger.batch.events": len(batch.events),
        },
        links=active.links_to(offered[:RECORD_LINKS_MAX]),
    )
    with use_span(span, end_on_exit=False):
        recording = recorder.submit(batch.events)

    def recorded(done: Future[Any]) -> None:
        if done.cancelled():
            failed(span, "cancelled: an earlier batch failed")
        elif done.exception() is not None:
            failed(span, done.exception() or "")
        span.end()

    recording.add_done_callback(recorded)
    return recording, trace_parent_of(span)


def publishing_traced(trace_parent: str, sent_ns: int, deliveries: list[Delivery], topic: str) -> None:
    """A span from `sent_ns` until the broker has answered every delivery (on the producer's
    thread), the child of the intake batch's span."""
    active = tracing.active
    if active is None:
        return
    from opentelemetry.trace import SpanKind

    from ledger.telemetry.spans import failed

    with active.resumed(trace_parent):
        span = active.tracer.start_span(
            f"send {topic}",
            kind=SpanKind.PRODUCER,
            start_time=sent_ns,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "messaging.batch.message_count": len(deliveries),
            },
        )
    futures = [delivery.future for delivery in deliveries if delivery.future is not None]
    left = len(futures)
    lock = threading.Lock()

    def answered(result: Any) -> None:
        nonlocal left
        if isinstance(result, BaseException):
            failed(span, result)
        with lock:
            left -= 1
            last = left == 0
        if last:
            span.end()

    if not futures:
        span.end()
    for future in futures:
        future.add_both(answered)
