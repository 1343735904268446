"""Two `ledger consume` processes in one group share the partitions; when one dies, the other takes
its partitions over and finishes the work, and the ledger ends exactly as a reference ledger."""

from __future__ import annotations

import signal
from pathlib import Path

from kafka_harness import (
    QUICK_REJOIN_ENV,
    Broker,
    ConsumerFactory,
    consumer_env,
    events_in_order,
    produce,
    reference_ledger,
    snapshot,
    wait_until,
)
from support.postgres import EmbeddedPostgres

from devtools.retailer import Retailer, Traffic

DEADLINE_S = 120
PARTITIONS = 4
ASSIGNED = "ledger_kafka_assigned_partitions"
COMMITTED = "ledger_kafka_records_committed_total"


def test_two_consumers_share_the_partitions_and_the_survivor_finishes_the_work(
    broker: Broker, kafka_postgres: EmbeddedPostgres, consumers: ConsumerFactory, tmp_path: Path
) -> None:
    topics = broker.new_topics("scale", partitions=PARTITIONS)
    database_url = kafka_postgres.create_database("kafka")
    env = consumer_env(
        database_url,
        broker.bootstrap,
        topics,
        LEDGER_KAFKA_BATCH_RECORDS_MAX="100",
        **QUICK_REJOIN_ENV,  # the survivor takes the partitions of the member killed -9 sooner
    )
    first = consumers(env, name="first")
    # The second starts once the first has created the schema: two processes creating it at the
    # same moment on a fresh database collide in PostgreSQL (CREATE TABLE IF NOT EXISTS races).
    wait_until(first.metrics, DEADLINE_S, "the first consumer to start")
    second = consumers(env, name="second")

    def shared() -> bool:
        return first.metric(ASSIGNED) == second.metric(ASSIGNED) == PARTITIONS / 2

    wait_until(shared, DEADLINE_S, "each consumer to hold half of the partitions")

    traffic = Traffic(stores=16, skus=50, events=4000, expiring_share=0.0, seed=11, run_id="scale")
    records = [(record.key, record.value) for record in Retailer(traffic).records()]
    sent = produce(broker.bootstrap, topics.events, records[:2000])
    wait_until(
        lambda: first.metric(COMMITTED) > 0 and second.metric(COMMITTED) > 0,
        DEADLINE_S,
        "both consumers to record events",
    )

    second.signal(signal.SIGKILL)
    assert second.wait_exit(DEADLINE_S) == -signal.SIGKILL
    sent += produce(broker.bootstrap, topics.events, records[2000:])
    wait_until(
        lambda: first.metric(ASSIGNED) == PARTITIONS, DEADLINE_S, "the survivor to take every partition"
    )
    wait_until(lambda: broker.caught_up(topics, sent), DEADLINE_S, "every offset committed")
    first.signal(signal.SIGTERM)
    assert first.wait_exit(DEADLINE_S) == 0

    events = events_in_order(sent)
    reference_url, _ = reference_ledger(events, tmp_path)
    expected_levels, expected_recorded = snapshot(reference_url, events)
    levels, recorded = snapshot(database_url, events)
    assert levels == expected_levels
    assert recorded == expected_recorded
    assert set(recorded.values()) == {1}
