"""Events from a transactional producer, against a real broker. A transaction ends with a marker
that takes an offset of its own and is no record for the ledger; the group's committed offset must
still go past it, or it stays short of the end of the partition for good once the producer is idle
(the lag never 0, in the ledger's metric and in any tool that watches the group). An aborted
transaction's records, which a read_committed consumer skips, are the same case (Tansu does not
keep them, so they are not sent here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from kafka_harness import Broker, TopicReader, envelope, intake_settings, started_ledger, wait_until

from ledger.config import Settings
from ledger.kafka import start_consumer
from ledger.service import Ledger

DEADLINE_S = 60
TRANSACTION_TIMEOUT_S = 30
STORE = "store-1"
EVENTS = 5


@pytest.fixture
def settings(broker: Broker, tmp_path: Path) -> Settings:
    return intake_settings(broker, f"sqlite:///{tmp_path / 'ledger.db'}", "transactions", partitions=1)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    with started_ledger(settings) as started:
        yield started


def produce_in_a_transaction(settings: Settings) -> None:
    """EVENTS receipts in one committed transaction: offsets 0 to EVENTS - 1, its marker EVENTS."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "transactional.id": f"{settings.kafka_topic}-tx"}
    )
    producer.init_transactions(TRANSACTION_TIMEOUT_S)
    producer.begin_transaction()
    for n in range(EVENTS):
        value = envelope(f"ev-{n}", STORE, "stock.receipt", [("SKU-1", 1)])
        producer.produce(settings.kafka_topic, key=STORE.encode(), value=value)
    producer.commit_transaction(TRANSACTION_TIMEOUT_S)


def test_the_group_commits_past_a_transactions_marker_and_its_lag_reaches_0(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    produce_in_a_transaction(settings)
    handle = start_consumer(ledger, settings)
    try:
        reader = TopicReader(settings.kafka_bootstrap or "", settings.kafka_results_topic, 1)
        try:
            records = reader.read_until(lambda got: len(got) >= EVENTS, DEADLINE_S, "a result per event")
        finally:
            reader.close()
        assert sorted(json.loads(record.value)["id"] for record in records) == [
            f"ev-{n}" for n in range(EVENTS)
        ]
        end = EVENTS + 1  # past the transaction's marker
        wait_until(
            lambda: broker.committed(settings.kafka_group).get(0) == end,
            DEADLINE_S,
            f"the group's offset committed up to {end}, the end of the partition",
        )
        wait_until(lambda: handle.lag == 0, DEADLINE_S, "a lag of 0")
        assert handle.stats.records_committed == EVENTS  # a marker is no record
    finally:
        assert handle.stop()


def test_an_intake_that_starts_just_before_a_transactions_marker_commits_past_it(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    """As after a restart of a member that had committed the transaction's events but not its
    marker: the marker is all there is to read, and nothing is recorded."""
    produce_in_a_transaction(settings)
    partition = TopicPartition(settings.kafka_topic, 0)
    earlier = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.kafka_group, enable_auto_commit=False
    )
    try:
        earlier.assign([partition])
        earlier.commit({partition: OffsetAndMetadata(EVENTS, "", -1)})
    finally:
        earlier.close(autocommit=False)
    handle = start_consumer(ledger, settings)
    try:
        end = EVENTS + 1
        wait_until(
            lambda: broker.committed(settings.kafka_group).get(0) == end,
            DEADLINE_S,
            f"the group's offset committed up to {end}, past the marker",
        )
        wait_until(lambda: handle.lag == 0, DEADLINE_S, "a lag of 0")
        assert handle.stats.records_consumed == 0
    finally:
        assert handle.stop()
