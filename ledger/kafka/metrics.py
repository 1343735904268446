"""The Kafka intake's counters and lag, kept as plain numbers and shown to Prometheus."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ledger.domain.model import Outcome

COUNTED_OUTCOMES = (Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.REJECTED)


@dataclass(slots=True)
class IntakeStats:
    """Written by the consumer thread (or its rebalance listener, while the consumer thread waits in
    poll) only; read by whoever scrapes (ints: no torn reads)."""

    records_consumed: int = 0
    records_committed: int = 0
    events_by_outcome: dict[str, int] = field(default_factory=lambda: {o.value: 0 for o in COUNTED_OUTCOMES})
    dead_lettered: int = 0
    events_refused: int = 0  # events the writer could not record even alone: dead-lettered
    key_mismatches: int = 0
    batches_committed: int = 0
    batches_failed: int = 0
    batches_republished: int = 0
    rebalances: int = 0
    batches_in_flight: int = 0
    producers_rebuilt: int = 0
    records_unpublishable: int = 0
    lag_by_partition: dict[tuple[str, int], int] = field(default_factory=dict)
    assigned_partitions: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def lag_records(self) -> int | None:
        """Records in the assigned partitions not yet committed; None before the first fetch."""
        with self.lock:
            if not self.lag_by_partition:
                return None
            return sum(self.lag_by_partition.values())

    def set_lag(self, lag_by_partition: dict[tuple[str, int], int]) -> None:
        with self.lock:
            self.lag_by_partition = lag_by_partition


class IntakeCollector(Collector):
    def __init__(self, stats: IntakeStats, ready: Callable[[], bool]) -> None:
        self.stats = stats
        self.ready = ready

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.stats
        yield CounterMetricFamily(
            "ledger_kafka_records_consumed",
            "records polled from the events topic (redeliveries too)",
            value=stats.records_consumed,
        )
        yield CounterMetricFamily(
            "ledger_kafka_records_committed",
            "records whose offsets are committed",
            value=stats.records_committed,
        )
        events = CounterMetricFamily(
            "ledger_kafka_events", "events recorded from Kafka, by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(stats.events_by_outcome.items()):
            events.add_metric([outcome], count)
        yield events
        yield CounterMetricFamily(
            "ledger_kafka_dead_lettered",
            "unreadable records sent to the dead-letter topic",
            value=stats.dead_lettered,
        )
        yield CounterMetricFamily(
            "ledger_kafka_events_refused",
            "events the writer could not record even alone (a bug, or an input it cannot store), "
            "sent to the dead-letter topic",
            value=stats.events_refused,
        )
        yield CounterMetricFamily(
            "ledger_kafka_key_mismatches",
            "events whose record key is not their subject (store id)",
            value=stats.key_mismatches,
        )
        yield CounterMetricFamily(
            "ledger_kafka_batches",
            "poll batches recorded, published and committed",
            value=stats.batches_committed,
        )
        yield CounterMetricFamily(
            "ledger_kafka_batches_failed",
            "poll batches that failed and were read again",
            value=stats.batches_failed,
        )
        yield CounterMetricFamily(
            "ledger_kafka_batches_republished",
            "failed publishes answered by publishing the batch's results again (not by reading it again)",
            value=stats.batches_republished,
        )
        yield CounterMetricFamily(
            "ledger_kafka_rebalances", "partition assignments received", value=stats.rebalances
        )
        yield GaugeMetricFamily(
            "ledger_kafka_batches_in_flight",
            "batches polled and not yet committed (recording, or waiting for the broker)",
            value=stats.batches_in_flight,
        )
        yield CounterMetricFamily(
            "ledger_kafka_producers_rebuilt",
            "producers closed after failing for good, and built anew",
            value=stats.producers_rebuilt,
        )
        yield CounterMetricFamily(
            "ledger_kafka_records_unpublishable",
            "results or dead letters the broker could never take, given up (each logged)",
            value=stats.records_unpublishable,
        )
        with stats.lock:
            lag_by_partition = dict(stats.lag_by_partition)
        yield GaugeMetricFamily(
            "ledger_kafka_lag_records",
            "records in this member's partitions not yet committed",
            value=sum(lag_by_partition.values()),
        )
        per_partition = GaugeMetricFamily(
            "ledger_kafka_partition_lag_records",
            "records not yet committed, per partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), lag in sorted(lag_by_partition.items()):
            per_partition.add_metric([topic, str(partition)], lag)
        yield per_partition
        yield GaugeMetricFamily(
            "ledger_kafka_assigned_partitions",
            "partitions assigned to this member",
            value=stats.assigned_partitions,
        )
        yield GaugeMetricFamily(
            "ledger_kafka_ready",
            "1 while the consumer is in its group, in touch with the broker, and able to record and publish",
            value=1 if self.ready() else 0,
        )


def intake_registry(collector: IntakeCollector) -> CollectorRegistry:
    """A registry of its own, so that several intakes (tests) never clash in the global one."""
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
