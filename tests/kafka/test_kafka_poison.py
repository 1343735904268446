"""An event the writer cannot record (a bug that strikes it alone) in the middle of a batch, against
a real broker and PostgreSQL: the batch is recorded one event at a time, the poisoned event goes to
the dead-letter topic with a readable reason and where it came from, every other event is recorded
once and answered once, in store order, and the partition moves on: nothing is read again."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka_harness import (
    Broker,
    TopicReader,
    envelope,
    intake_settings,
    produce,
    result_bodies,
    started_ledger,
    wait_until,
)
from support import poison
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.kafka.consumer import KafkaIntake
from ledger.kafka.handle import ConsumerHandle
from ledger.kafka.metrics import IntakeStats
from ledger.results import EventResult
from ledger.service import Ledger

DEADLINE_S = 60
PARTITIONS = 2
STORES = 4
EVENTS = 60
POISONED = 25  # its index among the events: in the middle of a batch of BATCH_RECORDS_MAX
BATCH_RECORDS_MAX = 20
Key = tuple[str, str]  # (source, id)


@dataclass
class WatchedLedger:
    """The real ledger, watched: which events each call carried and whether it recorded them."""

    ledger: Ledger
    recorded: list[list[Key]] = field(default_factory=list)
    failed: list[list[Key]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        keys = [event.key for event in events]
        try:
            results = self.ledger.submit_and_wait(events)
        except Exception:
            with self.lock:
                self.failed.append(keys)
            raise
        with self.lock:
            self.recorded.append(keys)
        return results


@pytest.fixture
def settings(broker: Broker, kafka_postgres: EmbeddedPostgres) -> Settings:
    return intake_settings(
        broker,
        kafka_postgres.create_database("kafka"),
        "poison",
        partitions=PARTITIONS,
        kafka_batch_records_max=BATCH_RECORDS_MAX,
        kafka_batches_in_flight_max=3,
    )


@pytest.fixture
def ledger(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    poison.install(monkeypatch.setattr)
    with started_ledger(settings) as started:
        yield started


def _records() -> list[tuple[str, bytes]]:
    records = []
    for n in range(EVENTS):
        store = f"store-{n % STORES}"
        event_id = f"{poison.POISON}{n}" if n == POISONED else f"event-{n}"
        records.append((store, envelope(event_id, store, "stock.receipt", [("SKU-1", 1)])))
    return records


def _read(settings: Settings, topic: str, count: int, what: str) -> list[Any]:
    reader = TopicReader(settings.kafka_bootstrap or "", topic, PARTITIONS)
    try:
        return reader.read_until(lambda got: len(got) >= count, DEADLINE_S, what)
    finally:
        reader.close()


def test_a_poisoned_event_in_a_batch_is_dead_lettered_and_every_other_event_is_recorded_once(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    records = _records()
    sent = produce(broker.bootstrap, settings.kafka_topic, records)  # all there before the first poll
    [poisoned] = [
        record for record in sent if json.loads(record.value or b"")["id"].startswith(poison.POISON)
    ]
    watched = WatchedLedger(ledger)
    handle = ConsumerHandle(KafkaIntake(watched, settings, intake_limits(settings), IntakeStats())).start()
    try:
        wait_until(lambda: handle.stats.records_committed == EVENTS, DEADLINE_S, "every offset committed")
        wait_until(lambda: handle.ready, DEADLINE_S, "the intake ready")
    finally:
        assert handle.stop()

    poisoned_key = ("test/kafka", f"{poison.POISON}{POISONED}")
    # The poisoned event came in a batch with others, which the writer refused as a whole.
    assert any(poisoned_key in keys and len(keys) > 1 for keys in watched.failed)
    # Every other event was recorded exactly once; the poisoned one never.
    recorded = [key for keys in watched.recorded for key in keys]
    good = {("test/kafka", f"event-{n}") for n in range(EVENTS) if n != POISONED}
    assert sorted(recorded) == sorted(good)
    # Nothing was read again: no batch failed, each record was consumed once.
    assert handle.stats.batches_failed == 0
    assert handle.stats.records_consumed == EVENTS
    assert handle.stats.events_refused == 1

    bodies = result_bodies(_read(settings, settings.kafka_results_topic, EVENTS - 1, "every result"))
    assert sorted((body["source"], body["id"]) for body in bodies) == sorted(good)
    assert {body["outcome"] for body in bodies} == {"accepted"}
    for store in {store for store, _ in records}:
        sent_ids = [json.loads(value)["id"] for key, value in records if key == store]
        answered = [body for body in bodies if body["subject"] == store]
        assert [body["id"] for body in answered] == [i for i in sent_ids if not i.startswith(poison.POISON)]
        positions = [body["position"] for body in answered]
        assert positions == sorted(positions)

    [letter] = _read(settings, settings.kafka_dlq_topic, 1, "the dead letter")
    headers = dict(letter.headers)
    error = headers["error"].decode()
    assert "could not record this event" in error and f"cannot store event {poisoned_key[1]}" in error
    assert headers["original_topic"].decode() == settings.kafka_topic
    assert int(headers["original_partition"]) == poisoned.partition
    assert int(headers["original_offset"]) == poisoned.offset
    assert letter.value == poisoned.value
    for store in range(STORES):
        [view] = ledger.levels(f"store-{store}", ["SKU-1"])
        expected = sum(1 for n in range(EVENTS) if n % STORES == store and n != POISONED)
        assert view.level.on_hand_units == expected
