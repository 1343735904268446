"""The intake as a thread of a running service (what `ledger serve` starts with LEDGER_KAFKA_BOOTSTRAP):
readiness, lag, metrics, a batch that fails to record and is read again, and a clean stop."""

from __future__ import annotations

from collections.abc import Iterator

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
from prometheus_client import generate_latest
from support.postgres import EmbeddedPostgres

from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.kafka import start_consumer
from ledger.kafka.metrics import intake_registry
from ledger.projections.queries import HistoryFilter
from ledger.results import EventResult
from ledger.service import Ledger

DEADLINE_S = 60


class FlakyLedger:
    """A ledger whose first `failures` writes fail, as during a database outage."""

    def __init__(self, ledger: Ledger, failures: int) -> None:
        self.ledger = ledger
        self.failures = failures
        self.calls = 0

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the database went away")
        return self.ledger.submit_and_wait(events)


@pytest.fixture
def settings(broker: Broker, kafka_postgres: EmbeddedPostgres) -> Settings:
    return intake_settings(broker, kafka_postgres.create_database("kafka"), "inproc", partitions=2)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    with started_ledger(settings) as started:
        yield started


def _send_receipts(broker: Broker, settings: Settings, store: str, count: int, *, units: int) -> list[str]:
    """`count` receipts of `units` of SKU-1 at `store`, on the intake's topic; their event ids."""
    ids = [f"{store}-{n}" for n in range(count)]
    produce(
        broker.bootstrap,
        settings.kafka_topic,
        [(store, envelope(event_id, store, "stock.receipt", [("SKU-1", units)])) for event_id in ids],
    )
    return ids


def test_a_batch_that_fails_to_record_is_read_again_and_recorded_once(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    flaky = FlakyLedger(ledger, failures=2)
    handle = start_consumer(flaky, settings)
    try:
        wait_until(lambda: handle.ready, DEADLINE_S, "the consumer to join its group")
        store = "store-flaky"
        ids = _send_receipts(broker, settings, store, 5, units=2)
        reader = TopicReader(broker.bootstrap, settings.kafka_results_topic, 2)
        try:
            records = reader.read_until(lambda got: len(got) >= len(ids), DEADLINE_S, "the results")
        finally:
            reader.close()
        assert flaky.calls > 2
        assert [body["outcome"] for body in result_bodies(records)] == ["accepted"] * len(ids)
        assert ledger.levels(store, ["SKU-1"])[0].level.on_hand_units == 10
        # CONTRACT §5: what came from Kafka names `kafka` as its principal in the history.
        history = ledger.history(HistoryFilter(store_id=store), 100)
        assert [row["principal"] for row in history] == ["kafka"] * len(ids)
        assert handle.stats.batches_failed == 2
        wait_until(lambda: handle.ready and handle.lag == 0, DEADLINE_S, "ready again with no lag")
        exposition = generate_latest(intake_registry(handle.collector)).decode()
        assert 'ledger_kafka_events_total{outcome="accepted"} 5.0' in exposition
        assert "ledger_kafka_batches_failed_total 2.0" in exposition
        assert "ledger_kafka_ready 1.0" in exposition
    finally:
        assert handle.stop()
    assert not handle.ready
    assert broker.group_members(settings.kafka_group) == []


def test_while_every_batch_fails_the_lag_counts_the_records_to_be_read_again(
    broker: Broker, settings: Settings, ledger: Ledger
) -> None:
    """A start during a database outage, with records waiting: nothing is recorded or committed,
    so the lag is every record sent (an alert on it must fire), not 0 from the fetch position past
    the first batch, which failed."""
    ids = _send_receipts(broker, settings, "store-lagging", 4, units=1)
    handle = start_consumer(FlakyLedger(ledger, failures=10**6), settings)
    try:
        wait_until(lambda: handle.stats.batches_failed >= 2, DEADLINE_S, "batches to fail")
        wait_until(lambda: handle.lag == len(ids), DEADLINE_S, f"a lag of {len(ids)}")
    finally:
        assert handle.stop()
