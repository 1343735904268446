"""Tracing the Kafka intake (issue #15, LEDGER_TRACING): a batch read from the topic is a span of
its own (linked to the producer's span when its records carry a W3C traceparent header), the
writer's batch that recorded it is linked to it, and publishing its results is its child,
ended once the broker acknowledged them."""

from __future__ import annotations

from kafka_harness import Broker, TopicReader, envelope, intake_settings, produce, started_ledger, wait_until
from opentelemetry import trace
from support.postgres import EmbeddedPostgres
from support.tracing import child_of, named, traced_into_memory

from ledger.kafka import start_consumer

DEADLINE_S = 60
PRODUCER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN_ID = "b7ad6b7169203331"


def test_an_intake_batch_is_a_span_linked_from_its_writer_batch_with_its_publishing_as_a_child(
    broker: Broker, kafka_postgres: EmbeddedPostgres
) -> None:
    settings = intake_settings(broker, kafka_postgres.create_database("kafka"), "traced", partitions=1)
    store = "store-traced"
    ids = [f"traced-{n}" for n in range(3)]
    with traced_into_memory() as exporter, started_ledger(settings) as ledger:
        handle = start_consumer(ledger, settings)
        try:
            wait_until(lambda: handle.ready, DEADLINE_S, "the consumer to join its group")
            produce(
                broker.bootstrap,
                settings.kafka_topic,
                [(store, envelope(event_id, store, "stock.receipt", [("SKU-1", 1)])) for event_id in ids],
                headers=[("traceparent", f"00-{PRODUCER_TRACE_ID}-{PRODUCER_SPAN_ID}-01".encode())],
            )
            reader = TopicReader(broker.bootstrap, settings.kafka_results_topic, 1)
            try:
                reader.read_until(lambda got: len(got) >= len(ids), DEADLINE_S, "the results")
            finally:
                reader.close()

            def publishing_ended() -> bool:
                return bool(named(exporter.get_finished_spans(), f"send {settings.kafka_results_topic}"))

            wait_until(publishing_ended, DEADLINE_S, "the publishing span to end")
        finally:
            assert handle.stop()
        spans = exporter.get_finished_spans()
    intakes = named(spans, f"process {settings.kafka_topic}")
    assert sum(span.attributes["ledger.batch.events"] for span in intakes) == len(ids)
    for intake in intakes:
        assert intake.kind == trace.SpanKind.CONSUMER
        assert intake.attributes["messaging.system"] == "kafka"
        assert {(link.context.trace_id, link.context.span_id) for link in intake.links} == {
            (int(PRODUCER_TRACE_ID, 16), int(PRODUCER_SPAN_ID, 16))
        }
        batches = [
            s
            for s in named(spans, "writer batch")
            if any(link.context.span_id == intake.context.span_id for link in s.links)
        ]
        assert batches, "the writer's batch links to the intake batch it recorded"
        [publishing] = [
            s for s in named(spans, f"send {settings.kafka_results_topic}") if child_of(s, intake)
        ]
        assert publishing.kind == trace.SpanKind.PRODUCER
        assert (
            publishing.attributes["messaging.batch.message_count"] == intake.attributes["ledger.batch.events"]
        )
