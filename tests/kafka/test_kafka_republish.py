"""No broker: the intake against a fake consumer, ledger and producers. A publish that fails because
the producer lost its state at the broker (OutOfOrderSequenceNumberError, as after a broker that
restarted empty) gets a new producer at once, which publishes the batch's results again: the
events are recorded once and answered with their first outcome, never as duplicates, and no
offset is committed before the broker has acknowledged the results. Only after
`kafka_republishes_max` attempts is the batch read again."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaError, OutOfOrderSequenceNumberError
from kafka.future import Future
from kafka.structs import TopicPartition
from kafka_harness import envelope, wait_until

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import Outcome, StockEvent
from ledger.kafka.consumer import KafkaIntake
from ledger.kafka.handle import ConsumerHandle
from ledger.results import EventResult, Original

DEADLINE_S = 30
TOPIC = "fake.events"
PARTITIONS = 2
EVENTS_PER_PARTITION = 12
BATCH_RECORDS_MAX = 5
POLL_TIMEOUT_MS = 20
LOOP_TURNS_WATCHED = 20  # turns of the intake's loop during which nothing may be committed


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


class FakeConsumer:
    """One member that is assigned every partition on its first poll; commits and seeks are kept."""

    def __init__(self, records: dict[int, list[FakeRecord]]) -> None:
        self.records = records
        self.partitions = [TopicPartition(TOPIC, p) for p in sorted(records)]
        self.positions = dict.fromkeys(self.partitions, 0)
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.polls = 0
        self._listener: Any = None
        self._assigned = False
        self._paused: set[TopicPartition] = set()
        self._turn = threading.Condition()

    def subscribe(self, topics: list[str], listener: Any) -> None:
        assert topics == [TOPIC]
        self._listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[FakeRecord]]:
        if not self._assigned:
            self._assigned = True
            self._listener.on_partitions_assigned(list(self.partitions))
        polled: dict[TopicPartition, list[FakeRecord]] = {}
        room = max_records
        for partition in self.partitions:
            if partition in self._paused or room == 0:
                continue
            position = self.positions[partition]
            taken = self.records[partition.partition][position : position + room]
            if taken:
                polled[partition] = taken
                self.positions[partition] = position + len(taken)
                room -= len(taken)
        with self._turn:
            self.polls += 1
            self._turn.notify_all()
            if not polled:
                self._turn.wait(timeout_ms / 1000)
        return polled

    def wait_for_polls(self, count: int) -> None:
        end = self.polls + count
        wait_until(lambda: self.polls >= end, DEADLINE_S, f"{count} more polls")

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def assignment(self) -> set[TopicPartition]:
        return set(self.partitions) if self._assigned else set()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.positions[partition] = offset

    def commit(self, offsets: dict[TopicPartition, Any], timeout_ms: int | None = None) -> None:
        committed = {partition: meta.offset for partition, meta in offsets.items()}
        self.commits.append(committed)
        self.committed_offsets.update(committed)

    def commit_async(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commit(offsets)

    def highwater(self, partition: TopicPartition) -> int:
        return len(self.records[partition.partition])

    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.positions[partition]

    def committed(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None:
        return self.committed_offsets.get(partition)

    def close(self, autocommit: bool = False, timeout_ms: int | None = None) -> None:
        assert not autocommit


@dataclass
class FakeLedger:
    """Accepts every event the first time, answers it `duplicate` after; counts each recording."""

    recorded: Counter[tuple[str, str]] = field(default_factory=Counter)
    first: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        results = []
        with self.lock:
            for event in events:
                self.recorded[event.key] += 1
                source, event_id = event.key
                position = self.first.get(event.key)
                if position is None:
                    position = self.first[event.key] = len(self.first) + 1
                    results.append(
                        EventResult(event_id, source, event.store_id, Outcome.ACCEPTED, position=position)
                    )
                else:
                    original = Original(Outcome.ACCEPTED, None, position)
                    results.append(
                        EventResult(event_id, source, event.store_id, Outcome.DUPLICATE, original=original)
                    )
        return results


class FakeProducer:
    """Fails every send with `error`; or, while `hold`, keeps the acknowledgements until
    `acknowledge()`; or acknowledges each record `ack_after_s` after it was sent (0: at once)."""

    def __init__(self, error: KafkaError | None, hold: bool, ack_after_s: float = 0.0) -> None:
        self.error = error
        self.hold = hold
        self.ack_after_s = ack_after_s
        self.sent: list[dict[str, Any]] = []
        self.pending: list[Future] = []
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def send(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: Any, buffer_wait_s: float | None
    ) -> Future:
        future = Future()
        if self.error is not None:
            return future.failure(self.error)
        with self.lock:
            self.sent.append(json.loads(value or b""))
            if self.hold:
                self.pending.append(future)
                return future
        if self.ack_after_s:
            threading.Timer(self.ack_after_s, future.success, [None]).start()
            return future
        return future.success(None)

    def acknowledge(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for future in pending:
            future.success(None)

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        self.closed.set()


class Producers:
    """The producer factory: the first `failing` producers built fail every send with `error`."""

    def __init__(
        self, error: KafkaError, failing: int, *, hold: bool = False, ack_after_s: float = 0.0
    ) -> None:
        self.error = error
        self.failing = failing
        self.hold = hold
        self.ack_after_s = ack_after_s
        self.built: list[FakeProducer] = []

    def __call__(self, settings: Settings) -> FakeProducer:
        failed_for_good = len(self.built) < self.failing
        producer = FakeProducer(
            self.error if failed_for_good else None, hold=self.hold, ack_after_s=self.ack_after_s
        )
        self.built.append(producer)
        return producer


def fake_records() -> dict[int, list[FakeRecord]]:
    records: dict[int, list[FakeRecord]] = {}
    for partition in range(PARTITIONS):
        store = f"store-{partition}"
        records[partition] = [
            FakeRecord(
                TOPIC,
                partition,
                offset,
                store.encode(),
                envelope(f"ev-{partition}-{offset}", store, "stock.receipt", [("SKU-1", 1)]),
            )
            for offset in range(EVENTS_PER_PARTITION)
        ]
    return records


def settings(**update: Any) -> Settings:
    return Settings(
        kafka_bootstrap="fake:9092",
        kafka_topic=TOPIC,
        kafka_batch_records_max=BATCH_RECORDS_MAX,
        kafka_batches_in_flight_max=3,
        kafka_poll_timeout_ms=POLL_TIMEOUT_MS,
        kafka_retry_backoff_ms_max=50,
        **update,
    )


@dataclass
class Run:
    intake: KafkaIntake
    handle: ConsumerHandle
    consumer: FakeConsumer
    ledger: FakeLedger
    producers: Producers

    def all_committed(self) -> bool:
        return all(
            self.consumer.committed_offsets.get(partition) == EVENTS_PER_PARTITION
            for partition in self.consumer.partitions
        )


@pytest.fixture
def run_intake() -> Iterator[Any]:
    handles: list[ConsumerHandle] = []

    def start(producers: Producers, **update: Any) -> Run:
        chosen = settings(**update)
        consumer = FakeConsumer(fake_records())
        ledger = FakeLedger()
        intake = KafkaIntake(
            ledger,
            chosen,
            intake_limits(chosen),
            consumer_factory=lambda _: consumer,
            producer_factory=producers,
        )
        handle = ConsumerHandle(intake).start()
        handles.append(handle)
        return Run(intake, handle, consumer, ledger, producers)

    yield start
    for handle in handles:
        assert handle.stop(DEADLINE_S)


def keys() -> set[tuple[str, str]]:
    return {
        ("test/kafka", f"ev-{partition}-{offset}")
        for partition in range(PARTITIONS)
        for offset in range(EVENTS_PER_PARTITION)
    }


def test_results_whose_producer_lost_its_state_are_published_again_by_a_new_producer_not_recorded_again(
    run_intake: Any,
) -> None:
    producers = Producers(OutOfOrderSequenceNumberError("the broker restarted empty"), failing=1, hold=True)
    run: Run = run_intake(producers)
    in_flight = BATCH_RECORDS_MAX * run.intake.settings.kafka_batches_in_flight_max
    wait_until(
        lambda: len(producers.built) == 2 and len(producers.built[1].sent) == in_flight,
        DEADLINE_S,
        "the results of every batch in flight sent again by a second producer",
    )
    new = producers.built[1]
    # Sent but not acknowledged: nothing is committed, however many turns the loop takes.
    run.consumer.wait_for_polls(LOOP_TURNS_WATCHED)
    assert run.consumer.commits == []
    assert not run.handle.ready
    new.hold = False
    new.acknowledge()
    wait_until(run.all_committed, DEADLINE_S, "every offset committed once acknowledged")
    wait_until(lambda: run.handle.ready, DEADLINE_S, "ready again")

    bodies = new.sent
    assert {(body["source"], body["id"]) for body in bodies} == keys()
    assert Counter(body["outcome"] for body in bodies) == {"accepted": len(keys())}
    assert run.ledger.recorded == Counter(dict.fromkeys(keys(), 1))
    assert run.consumer.seeks == []  # nothing was read again
    assert run.intake.stats.batches_failed == 0
    assert run.intake.stats.batches_republished >= 1
    assert producers.built[0].closed.is_set(), "the producer that lost its state was not closed"
    assert run.intake.stats.producers_rebuilt == 1


def test_a_batch_still_unpublished_after_its_republishes_is_read_again(run_intake: Any) -> None:
    republishes_max = 2
    # Every producer until the last fails: the first publish and each republish of the first batch.
    producers = Producers(OutOfOrderSequenceNumberError("lost again"), failing=1 + republishes_max)
    run: Run = run_intake(producers, kafka_republishes_max=republishes_max)
    wait_until(run.all_committed, DEADLINE_S, "every offset committed")

    assert len(producers.built) == 2 + republishes_max
    assert run.intake.stats.batches_republished == republishes_max
    assert run.intake.stats.batches_failed == 1
    assert (TopicPartition(TOPIC, 0), 0) in run.consumer.seeks  # the first batch, read again
    answered = {(body["source"], body["id"]): body["outcome"] for body in producers.built[-1].sent}
    assert set(answered) == keys()
    # The first batch was recorded, read again and so answered `duplicate`: the fallback's price.
    read_again = {key for key, count in run.ledger.recorded.items() if count == 2}
    assert read_again and all(answered[key] == "duplicate" for key in read_again)
    assert all(count in (1, 2) for count in run.ledger.recorded.values())


def test_results_acknowledged_after_the_publish_timeout_but_within_the_delivery_timeout_are_sent_once(
    run_intake: Any,
) -> None:
    """A slow broker acknowledges each record after the publish timeout, while the producer still
    delivers it (within its delivery timeout). The intake gave up on each batch at the publish
    timeout and sent its results again while the first copies were still on their way: every
    result twice or more on the results topic, and a batch whose every publish was late read again
    (found by review). Only the producer's verdict on a record ends its wait."""
    publish_timeout_s = 0.2
    producers = Producers(KafkaError("unused"), failing=0, ack_after_s=5 * publish_timeout_s)
    run: Run = run_intake(producers, kafka_publish_timeout_s=publish_timeout_s)
    wait_until(run.all_committed, DEADLINE_S, "every offset committed")

    sent = [(body["source"], body["id"]) for producer in producers.built for body in producer.sent]
    assert Counter(sent) == Counter(dict.fromkeys(keys(), 1)), "a result published more than once"
    assert run.intake.stats.batches_republished == 0
    assert run.intake.stats.batches_failed == 0
    assert len(producers.built) == 1
