"""The ledger's producer (librdkafka, ledger/kafka/producer.py) keeps what the intake relies on: keyed
records land where kafka-python (and Java) would put them, in order per key; its errors are
kafka-python's classes, so the publisher tells them apart; and a full buffer ends a send with a
timeout instead of holding it."""

from __future__ import annotations

import json
import time
from typing import Any

import confluent_kafka
import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from kafka.partitioner import DefaultPartitioner
from kafka_harness import Broker, TopicReader, free_port

from ledger.config import Settings
from ledger.domain.model import Outcome, RejectionReason, Shortfall
from ledger.kafka.clients import new_producer, security
from ledger.kafka.metrics import IntakeStats
from ledger.kafka.producer import (
    LocalProducerError,
    Producer,
    ProducerFailedForGood,
    kafka_error,
    producer_config,
)
from ledger.kafka.publisher import Delivery, Publisher, PublishFailed
from ledger.kafka.records import Outbound, result_record
from ledger.results import EventResult

# Far below the producer's publish timeout (60 s) in the test of a send's deadline.
PUBLISH_TIMEOUT_FAR_S = 20.0

PARTITIONS = 4
STORES = 40
RECORDS_PER_STORE = 25


class _Cluster:
    """What DefaultPartitioner asks of kafka-python's cluster metadata."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def topics(self) -> set[str]:
        return {self.topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))


def test_keyed_records_land_where_kafka_python_puts_them_in_the_order_sent(broker: Broker) -> None:
    topics = broker.new_topics("producer-placement", PARTITIONS)
    producer = new_producer(Settings(kafka_bootstrap=broker.bootstrap))
    sent = []
    for number in range(RECORDS_PER_STORE):
        for store in range(STORES):
            value = f"{store}:{number}".encode()
            sent.append(producer.send(topics.events, key=f"store-{store}".encode(), value=value, headers=[]))
    producer.flush(30)
    assert all(future.succeeded() for future in sent)
    producer.close(5)

    reader = TopicReader(broker.bootstrap, topics.events, PARTITIONS)
    try:
        records = reader.read_until(lambda got: len(got) >= len(sent), 30, "every record read back")
    finally:
        reader.close()
    default, cluster = DefaultPartitioner(), _Cluster(topics.events)
    order: dict[bytes, list[int]] = {}
    for record in records:
        expected = default.partition(topics.events, record.key, record.key, None, None, cluster)
        assert record.partition == expected, record.key
        order.setdefault(record.key, []).append(int(record.value.split(b":")[1]))
    assert len(order) == STORES
    assert all(numbers == list(range(RECORDS_PER_STORE)) for numbers in order.values())


def test_a_producer_is_built_only_once_a_broker_answers() -> None:
    with pytest.raises(KafkaConnectionError):
        new_producer(Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}"))  # nothing listens


def test_a_record_over_the_request_size_is_refused_at_once_as_kafka_python_refuses_it() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens: never sent
    settings = Settings(kafka_bootstrap=bootstrap)
    producer = Producer(producer_config(settings, bootstrap, "test", security(settings)), 1.0)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            producer.send("anywhere", key=b"k", value=b"x" * (settings.kafka_produce_request_bytes_max + 1))
    finally:
        producer.close(0)


def test_a_full_buffer_ends_the_send_with_a_timeout_and_the_unsent_records_fail_on_close() -> None:
    config: dict[str, Any] = {
        "bootstrap.servers": f"127.0.0.1:{free_port()}",  # nothing listens: nothing leaves the buffer
        "queue.buffering.max.messages": 1,
    }
    producer = Producer(config, publish_timeout_s=0.2)
    first = producer.send("anywhere", key=b"k", value=b"first")
    with pytest.raises(KafkaTimeoutError, match="buffer stayed full"):
        producer.send("anywhere", key=b"k", value=b"second")
    assert not first.is_done
    producer.close(0)
    assert first.failed()


def test_a_send_with_a_deadline_waits_for_buffer_room_only_until_it() -> None:
    """A revoke finishes its batches on the client's network thread, within a fraction of the
    session timeout: a full buffer must not hold it for the whole publish timeout."""
    config: dict[str, Any] = {
        "bootstrap.servers": f"127.0.0.1:{free_port()}",  # nothing listens: nothing leaves the buffer
        "queue.buffering.max.messages": 1,
    }
    producer = Producer(config, publish_timeout_s=60.0)
    publisher = Publisher(Settings(kafka_bootstrap="unused:1"), lambda _: producer, IntakeStats())
    publisher.open()  # built by the intake's loop, as ever before a revoke: a send by a deadline builds none
    try:
        producer.send("anywhere", key=b"k", value=b"first")
        began = time.monotonic()
        with pytest.raises(KafkaTimeoutError, match=r"buffer stayed full for 0\.3 s"):
            producer.send("anywhere", key=b"k", value=b"second", buffer_wait_s=0.3)
        records = [Outbound("anywhere", b"k", b"third", [], "the third record")]
        with pytest.raises(PublishFailed, match="buffer stayed full"):
            publisher.send(records, deadline_s=time.monotonic() + 0.3)
        assert time.monotonic() - began < PUBLISH_TIMEOUT_FAR_S
    finally:
        producer.close(0)


@pytest.mark.parametrize(
    ("code", "fatal", "expected"),
    [
        (confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE, False, MessageSizeTooLargeError),
        (confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION, False, NotLeaderForPartitionError),
        (confluent_kafka.KafkaError._MSG_TIMED_OUT, False, KafkaTimeoutError),
        (confluent_kafka.KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, True, ProducerFailedForGood),
        (confluent_kafka.KafkaError._FATAL, False, ProducerFailedForGood),
        (confluent_kafka.KafkaError._TRANSPORT, False, LocalProducerError),
    ],
)
def test_librdkafkas_errors_are_kafka_pythons_classes_and_a_fatal_one_is_not_retriable(
    code: int, fatal: bool, expected: type[Exception]
) -> None:
    error = kafka_error(confluent_kafka.KafkaError(code, "said the broker", fatal=fatal))
    assert type(error) is expected
    assert "said the broker" in str(error)
    if expected is ProducerFailedForGood:
        assert not error.retriable


def test_publishing_to_a_topic_that_does_not_exist_never_creates_it(broker: Broker) -> None:
    """Topics are made on purpose: after a broker restarted empty, a results topic made by a publish
    would have the broker's default partition count, not the operator's."""
    missing = f"{broker.new_topics('producer-missing', 1).events}.never-made"
    producer = new_producer(Settings(kafka_bootstrap=broker.bootstrap))
    try:
        sent = producer.send(missing, key=b"store-1", value=b"lost")
        producer.flush(3)  # time enough to ask the broker about the topic (and to create it, if asked)
        assert not sent.succeeded()
    finally:
        producer.close(0)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert missing not in admin.list_topics()
    finally:
        admin.close()


class _FatalClient:
    """librdkafka's producer after its fatal error: it takes records, answers none, and raises the
    error from poll() and flush()."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.queued = 0

    def produce(self, topic: str, **_: Any) -> None:
        self.queued += 1

    def poll(self, timeout: float) -> int:
        raise confluent_kafka.KafkaException(
            confluent_kafka.KafkaError(
                confluent_kafka.KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence lost", fatal=True
            )
        )

    flush = poll

    def __len__(self) -> int:
        return self.queued

    def purge(self) -> None:
        self.queued = 0

    def close(self) -> None:
        pass


def test_a_fatal_error_raised_by_poll_fails_the_records_waiting_rather_than_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker that restarted empty: the intake must see its records fail (and build a new
    producer), not an exception out of the loop that drops every batch in flight."""
    monkeypatch.setattr(confluent_kafka, "Producer", _FatalClient)
    producer = Producer({}, publish_timeout_s=1.0)
    sent = producer.send("results", key=b"store-1", value=b"result")
    assert sent.is_done and sent.failed()
    assert isinstance(sent.exception, ProducerFailedForGood) and not sent.exception.retriable
    assert "sequence lost" in str(sent.exception)
    producer.close(0)


class _AnsweredOnSecondLook:
    """A future whose delivery report arrives while it is being looked at (librdkafka serves its
    reports when a future is asked whether it is done)."""

    def __init__(self) -> None:
        self.looks = 0
        self.exception = None

    @property
    def is_done(self) -> bool:
        self.looks += 1
        return self.looks > 1

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None


def test_a_record_acknowledged_while_it_is_looked_at_is_not_taken_for_a_failed_one() -> None:
    publisher = Publisher(Settings(kafka_bootstrap="127.0.0.1:9"), lambda settings: None, IntakeStats())
    deliveries = [Delivery(Outbound("results", b"store-1", b"result", []), _AnsweredOnSecondLook())]
    assert not publisher.acknowledged(deliveries)  # not yet: no PublishFailed("... None")
    assert publisher.acknowledged(deliveries)


def test_a_result_too_large_to_publish_is_sent_with_its_shortfall_cut_never_given_up() -> None:
    """A sale of 1,000 lines, every one short, is rejected with a shortfall naming each: a result
    of about 100 KiB, over a producer request of 64 KiB (the least LEDGER_KAFKA_PRODUCE_REQUEST_BYTES_MAX
    allows; a topic's max.message.bytes can be lower still). It was given up (logged, counted as
    unpublishable): the event had no result at all (found by review). It goes out with the
    fields CONTRACT §2 lists, its shortfall cut to the lines that fit and saying so."""
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens: never sent
    settings = Settings(
        kafka_bootstrap=bootstrap,
        kafka_produce_request_bytes_max=64 * 1024,
        kafka_dlq_value_bytes_max=32 * 1024,
        kafka_dlq_headers_bytes_max=16 * 1024,
    )
    producer = Producer(producer_config(settings, bootstrap, "test", security(settings)), 1.0)
    stats = IntakeStats()
    publisher = Publisher(settings, lambda _: producer, stats)
    lines = 1000
    shortfall = tuple(Shortfall(f"SKU-{n:06d}-{'x' * 50}", 1_000_000_000, -(2**62)) for n in range(lines))
    result = EventResult(
        "sale-1", "shop/web", "store-1", Outcome.REJECTED, RejectionReason.INSUFFICIENT_STOCK, shortfall, 7
    )
    record = result_record("stock.events.results", result)
    assert record.value is not None and len(record.value) > settings.kafka_produce_request_bytes_max
    try:
        [delivery] = publisher.send([record])
        assert delivery.future is not None, "the result was given up"
        assert stats.records_unpublishable == 0
        sent = delivery.record
        assert sent.key == b"store-1" and sent.topic == "stock.events.results"
        assert sent.value is not None and len(sent.value) <= settings.kafka_produce_request_bytes_max
        body = json.loads(sent.value)
        assert {key: body[key] for key in ("id", "source", "subject", "outcome", "reason", "position")} == {
            "id": "sale-1",
            "source": "shop/web",
            "subject": "store-1",
            "outcome": "rejected",
            "reason": "insufficient_stock",
            "position": 7,
        }
        assert 0 < len(body["shortfall"]) < lines
        assert body["shortfall"][0] == {
            "sku": shortfall[0].sku,
            "requested": 1_000_000_000,
            "available": -(2**62),
        }
        assert body["shortfall_truncated"] is True
        assert body["shortfall_lines"] == lines
    finally:
        producer.close(0)
