"""SIGTERM in the middle of a batch: `ledger consume` records it, publishes its results, commits its
offsets, leaves the group and exits 0, and goes no further."""

from __future__ import annotations

from kafka_harness import (
    Broker,
    ConsumerFactory,
    TopicReader,
    consumer_env,
    envelope,
    events_in_order,
    produce,
    result_bodies,
    snapshot,
)
from support.postgres import EmbeddedPostgres

DEADLINE_S = 90
EVENTS = 600
BATCH_RECORDS_MAX = 200


def test_sigterm_finishes_the_batch_commits_it_and_leaves_the_group(
    broker: Broker, kafka_postgres: EmbeddedPostgres, consumers: ConsumerFactory
) -> None:
    topics = broker.new_topics("term", partitions=1)
    database_url = kafka_postgres.create_database("kafka")
    store = "store-term"
    sent = produce(
        broker.bootstrap,
        topics.events,
        [(store, envelope(f"term-{n}", store, "stock.receipt", [("SKU-1", 1)])) for n in range(EVENTS)],
    )
    env = consumer_env(
        database_url,
        broker.bootstrap,
        topics,
        LEDGER_KAFKA_BATCH_RECORDS_MAX=str(BATCH_RECORDS_MAX),
        LEDGER_TEST_CRASH_POINT="term_while_recording",
        LEDGER_TEST_CRASH_BATCH="1",
    )
    consumer = consumers(env, crashing=True)
    assert consumer.wait_exit(DEADLINE_S) == 0, consumer.log[-3000:]
    assert "CRASH-TEST SIGTERM while recording" in consumer.log

    committed = broker.committed(topics.group)[0]
    assert 0 < committed <= BATCH_RECORDS_MAX
    assert broker.group_members(topics.group) == []

    events = events_in_order(sent)
    levels, recorded = snapshot(database_url, events)
    assert levels[(store, "SKU-1")] == (committed, 0, 0)
    assert sorted(recorded) == sorted(("test/kafka", f"term-{n}") for n in range(committed))

    results = TopicReader(broker.bootstrap, topics.results, 1)
    try:
        records = results.read_until(lambda got: len(got) >= committed, DEADLINE_S, "the batch's results")
    finally:
        results.close()
    assert [body["id"] for body in result_bodies(records)] == [f"term-{n}" for n in range(committed)]
