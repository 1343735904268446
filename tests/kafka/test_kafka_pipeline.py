"""The pipelined intake in process, against a real broker and PostgreSQL: the next batch is read
while one is recorded, and every event still gets exactly one result, in order; a recording that
fails mid-pipeline is read again with everything after it, and no offset is committed past an
event that is not durable; a producer that failed for good is rebuilt, and the intake says it is
not ready meanwhile, and the batch's results are published again rather than read again."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaError, NotLeaderForPartitionError, OutOfOrderSequenceNumberError
from kafka.future import Future
from kafka_harness import (
    Broker,
    Sent,
    TopicReader,
    envelope,
    intake_settings,
    produce,
    result_bodies,
    started_ledger,
    wait_until,
)
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.kafka.clients import new_producer
from ledger.kafka.consumer import KafkaIntake
from ledger.kafka.handle import ConsumerHandle
from ledger.kafka.metrics import IntakeStats
from ledger.kafka.pipeline import InFlight, commit_offsets
from ledger.results import EventResult
from ledger.service import Ledger

DEADLINE_S = 60
PARTITIONS = 2
STORES = 4
BATCH_RECORDS_MAX = 20
RECORDING_DELAY_S = 0.05  # each recording takes at least this: batches pile up behind it
Key = tuple[str, str]  # (source, id)


@dataclass
class SlowLedger:
    """The real ledger, slower, and watched: which events each call recorded, what the intake had
    read by the time a recording ended, and (optionally) one call that fails."""

    ledger: Ledger
    stats: IntakeStats | None = None
    fail_call: int | None = None
    calls: list[list[Key]] = field(default_factory=list)
    durable: set[Key] = field(default_factory=set)
    read_ahead: list[int] = field(default_factory=list)  # records read beyond those recorded
    read_ahead_at_failure: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        time.sleep(RECORDING_DELAY_S)
        with self.lock:
            self.calls.append([event.key for event in events])
            if len(self.calls) == self.fail_call:
                if self.stats is not None:
                    recorded = sum(len(call) for call in self.calls)
                    self.read_ahead_at_failure = self.stats.records_consumed - recorded
                raise ConnectionError("the database went away")
        results = self.ledger.submit_and_wait(events)
        with self.lock:
            self.durable.update(event.key for event in events)
            if self.stats is not None:
                recorded = sum(len(call) for call in self.calls[:-1]) + len(events)
                self.read_ahead.append(self.stats.records_consumed - recorded)
        return results


class CheckedIntake(KafkaIntake):
    """Checks at every commit that each event before the offsets it commits is durable."""

    def __init__(self, slow: SlowLedger, settings: Settings, keys_at: dict[tuple[int, int], Key]) -> None:
        stats = IntakeStats()
        super().__init__(slow, settings, intake_limits(settings), stats)
        slow.stats = stats
        self.slow = slow
        self.keys_at = keys_at
        self.violations: list[str] = []

    def commit(self, consumer: Any, flights: list[InFlight], *, wait: bool = True) -> None:
        # Every offset this commit carries: these batches' and any not committed yet (the ones
        # whose commit failed, and those the consumer passed without a record for the ledger).
        offsets = {**self._offsets.uncommitted, **commit_offsets(flights)}
        with self.slow.lock:
            for partition, end in offsets.items():
                for offset in range(end):
                    key = self.keys_at.get((partition.partition, offset))
                    if key is not None and key not in self.slow.durable:
                        self.violations.append(f"offset {end} committed before {key} was recorded")
        super().commit(consumer, flights, wait=wait)


@pytest.fixture
def settings(broker: Broker, kafka_postgres: EmbeddedPostgres) -> Settings:
    return intake_settings(
        broker,
        kafka_postgres.create_database("kafka"),
        "pipeline",
        partitions=PARTITIONS,
        kafka_batch_records_max=BATCH_RECORDS_MAX,
        kafka_batches_in_flight_max=3,
        kafka_producer_failures_max=2,
    )


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    with started_ledger(settings) as started:
        yield started


def receipts(prefix: str, count: int) -> list[tuple[str, bytes]]:
    """`count` receipts over STORES stores, keyed by store: one SKU each, one unit each."""
    records = []
    for n in range(count):
        store = f"store-{n % STORES}"
        records.append((store, envelope(f"{prefix}-{n}", store, "stock.receipt", [("SKU-1", 1)])))
    return records


def keys_by_offset(sent: list[Sent]) -> dict[tuple[int, int], Key]:
    keys = {}
    for record in sent:
        body = json.loads(record.value or b"")
        keys[(record.partition, record.offset)] = (body["source"], body["id"])
    return keys


def assert_one_accepted_result_each_in_store_order(
    records: list[tuple[str, bytes]], bodies: list[dict[str, Any]]
) -> None:
    """Each event answered once, `accepted` (so recorded once, on its first recording), and each
    store's events recorded in the order sent (positions grow)."""
    assert len(bodies) == len(records)
    assert {body["outcome"] for body in bodies} == {"accepted"}
    for store in {store for store, _ in records}:
        sent_ids = [json.loads(value)["id"] for key, value in records if key == store]
        answered = [body for body in bodies if body["subject"] == store]
        assert [body["id"] for body in answered] == sent_ids
        positions = [body["position"] for body in answered]
        assert positions == sorted(positions)


def start(intake: KafkaIntake) -> ConsumerHandle:
    handle = ConsumerHandle(intake).start()
    wait_until(lambda: handle.ready, DEADLINE_S, "the consumer to join its group")
    return handle


def results(settings: Settings, count: int, partitions: int = PARTITIONS) -> list[dict[str, Any]]:
    reader = TopicReader(settings.kafka_bootstrap or "", settings.kafka_results_topic, partitions)
    try:
        records = reader.read_until(lambda got: len(got) >= count, DEADLINE_S, f"{count} results")
        time.sleep(0.5)  # anything more that was on its way
        records = reader.read_until(lambda got: True, DEADLINE_S, "the rest")
    finally:
        reader.close()
    return result_bodies(records)


def test_the_next_batch_is_read_while_one_is_recorded_and_each_event_gets_one_result_in_order(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    slow = SlowLedger(ledger)
    records = receipts("pipe", 300)
    intake = CheckedIntake(slow, settings, {})
    handle = start(intake)
    try:
        sent = produce(broker.bootstrap, settings.kafka_topic, records)
        intake.keys_at.update(keys_by_offset(sent))
        wait_until(lambda: handle.stats.records_committed == len(records), DEADLINE_S, "every commit")
    finally:
        assert handle.stop()
    assert max(slow.read_ahead) > 0, "no batch was read while another was recorded"
    assert intake.violations == []
    assert handle.stats.batches_failed == 0
    assert_one_accepted_result_each_in_store_order(records, results(settings, len(records)))


def test_a_recording_that_fails_mid_pipeline_is_read_again_with_all_after_it_and_nothing_is_committed_past_it(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    slow = SlowLedger(ledger, fail_call=3)
    records = receipts("rewind", 200)
    intake = CheckedIntake(slow, settings, {})
    handle = start(intake)
    try:
        sent = produce(broker.bootstrap, settings.kafka_topic, records)
        intake.keys_at.update(keys_by_offset(sent))
        wait_until(lambda: handle.stats.records_committed == len(records), DEADLINE_S, "every commit")
        wait_until(lambda: handle.ready, DEADLINE_S, "ready again")
    finally:
        assert handle.stop()
    assert handle.stats.batches_failed == 1
    assert slow.read_ahead_at_failure > 0, "no batch was in flight behind the failed one"
    assert intake.violations == []
    # Had a batch handed over after the failed one been recorded, reading it again would have
    # answered `duplicate`, and its store's events would be out of order.
    assert_one_accepted_result_each_in_store_order(records, results(settings, len(records)))
    for store in range(STORES):
        [view] = ledger.levels(f"store-{store}", ["SKU-1"])
        assert view.level.on_hand_units == len(records) // STORES


class WatchedProducers:
    """Builds producers: first one that has failed for good (every send fails at once with
    `error`), then real ones; notes at every send whether the intake said it was ready."""

    def __init__(self, error: KafkaError) -> None:
        self.error = error
        self.intake: KafkaIntake | None = None
        self.built: list[Any] = []
        self.broken_closed = threading.Event()
        self.sends: list[tuple[int, int, bool]] = []  # (producer number, publishes failed, ready)

    def __call__(self, settings: Settings) -> Any:
        number = len(self.built)
        producer = _Broken(self, number) if number == 0 else _Watched(self, number, new_producer(settings))
        self.built.append(producer)
        return producer

    def note(self, number: int) -> None:
        assert self.intake is not None
        stats = self.intake.stats
        self.sends.append((number, stats.batches_failed + stats.batches_republished, self.intake.ready))


class _Broken:
    def __init__(self, producers: WatchedProducers, number: int) -> None:
        self.producers = producers
        self.number = number

    def send(self, topic: str, **_: Any) -> Future:
        self.producers.note(self.number)
        return Future().failure(self.producers.error)

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        self.producers.broken_closed.set()


class _Watched:
    def __init__(self, producers: WatchedProducers, number: int, producer: Any) -> None:
        self.producers = producers
        self.number = number
        self.producer = producer

    def send(self, topic: str, **kwargs: Any) -> Any:
        self.producers.note(self.number)
        return self.producer.send(topic, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self.producer.close(timeout=timeout)


@pytest.mark.parametrize(
    "error",
    [OutOfOrderSequenceNumberError("the broker lost its state"), NotLeaderForPartitionError("moving")],
    ids=["fatal", "retriable-in-a-row"],
)
def test_a_producer_that_failed_for_good_is_rebuilt_and_the_intake_is_not_ready_meanwhile(
    broker: Broker, settings: Settings, ledger: Ledger, error: KafkaError
) -> None:
    producers = WatchedProducers(error)
    intake = KafkaIntake(ledger, settings, intake_limits(settings), producer_factory=producers)
    producers.intake = intake
    handle = start(intake)
    records = receipts("rebuilt", 12)
    try:
        produce(broker.bootstrap, settings.kafka_topic, records)
        bodies = results(settings, len(records))
        wait_until(lambda: handle.ready, DEADLINE_S, "ready again")
    finally:
        assert handle.stop()
    assert len(producers.built) == 2
    assert producers.broken_closed.wait(DEADLINE_S)
    assert handle.stats.producers_rebuilt == 1
    # Once a publish has failed, the intake is not ready until the new producer's first commit.
    assert not any(ready for number, failed, ready in producers.sends if number == 0 and failed)
    first_on_new = next(ready for number, _, ready in producers.sends if number == 1)
    assert not first_on_new
    # One record per event (the broken producer sent none), each with its first outcome: the
    # batch was published again by the new producer, not read again (nor answered `duplicate`).
    assert len(bodies) == len(records)
    assert {body["outcome"] for body in bodies} == {"accepted"}
    assert handle.stats.batches_failed == 0
    assert handle.stats.batches_republished >= 1


class RevokeWatchingIntake(CheckedIntake):
    def __init__(self, slow: SlowLedger, settings: Settings, keys_at: dict[tuple[int, int], Key]) -> None:
        super().__init__(slow, settings, keys_at)
        self.in_flight_at_revoke: list[int] = []

    def on_revoked(self, revoked: list[Any]) -> None:
        self.in_flight_at_revoke.append(len(self._pipeline))
        super().on_revoked(revoked)


def test_a_rebalance_with_batches_in_flight_commits_nothing_past_an_unrecorded_event(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    topics = broker.new_topics("pipeline-rebalance", partitions=4)
    settings = settings.model_copy(
        update={
            "kafka_topic": topics.events,
            "kafka_results_topic": topics.results,
            "kafka_dlq_topic": topics.dlq,
            "kafka_group": topics.group,
        }
    )
    slow = SlowLedger(ledger)
    records = receipts("rebalance", 600)
    keys_at: dict[tuple[int, int], Key] = {}
    first = RevokeWatchingIntake(slow, settings, keys_at)
    handles = [start(first)]
    try:
        sent = produce(broker.bootstrap, settings.kafka_topic, records)
        keys_at.update(keys_by_offset(sent))
        wait_until(lambda: first.stats.records_committed > 0, DEADLINE_S, "the first member's commits")
        second = RevokeWatchingIntake(slow, settings, keys_at)
        handles.append(ConsumerHandle(second).start())
        wait_until(lambda: broker.caught_up(topics, sent), DEADLINE_S, "every offset committed")
    finally:
        for handle in handles:
            assert handle.stop()
    assert any(first.in_flight_at_revoke), "the rebalance came with no batch in flight"
    assert first.violations == [] and second.violations == []
    # What was in flight was finished and committed before the partitions moved: the new owner
    # did not read it again, so every event has exactly one result, `accepted`.
    bodies = results(settings, len(records), partitions=4)
    assert_one_accepted_result_each_in_store_order(records, bodies)
