"""The Kafka intake (CONTRACT §2): poll a batch, record its events in one write, publish a result per
event and every unreadable record to the dead-letter topic, and only then commit the offsets.

Why this order gives every event exactly one effect: an offset is committed only once the outcome
of each event before it is durable and its result acknowledged by the broker. A crash anywhere
before the commit means the batch is read again, by this process after a restart or by another
member of the group; the ledger answers the events it already holds as duplicates (by source and
id) and records the others. Nothing is lost and nothing is counted twice. What a crash can double
is a message: the results topic may then carry a second result for an event (`duplicate`, with
the first outcome in `original`), and the dead-letter topic a second copy of an unreadable record.

Per-store order: producers key records by store, so one store's events are in one partition, in
order; a batch lists each partition's records in offset order and the writer decides them in the
order given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.intake.envelope import IntakeLimits
from ledger.kafka.clients import new_consumer, new_producer
from ledger.kafka.dead_letters import DeadLetter, DeadLetterLimits, dead_letter_record
from ledger.kafka.metrics import IntakeStats
from ledger.kafka.records import Origin, read_value, result_record
from ledger.results import EventResult

log = logging.getLogger("ledger.kafka")

BACKOFF_MS_MIN = 100
POSITION_TIMEOUT_MS = 200


class LedgerPort(Protocol):
    """What the intake needs of the ledger: record events, answer once they are durable."""

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]: ...


@dataclass(slots=True)
class PollBatch:
    """One poll's records: the events to record and the records to dead-letter, and how far each
    partition gets once the batch is done."""

    events: list[StockEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    first_offsets: dict[Any, int] = field(default_factory=dict)  # TopicPartition -> offset
    next_offsets: dict[Any, int] = field(default_factory=dict)  # TopicPartition -> last offset + 1
    records: int = 0
    key_mismatches: int = 0


class Backoff:
    """Doubling waits between retries, from BACKOFF_MS_MIN up to a named maximum."""

    def __init__(self, wait_ms_max: int) -> None:
        self.wait_ms_max = wait_ms_max
        self.wait_ms = 0

    def next_s(self) -> float:
        self.wait_ms = min(max(self.wait_ms * 2, BACKOFF_MS_MIN), self.wait_ms_max)
        return self.wait_ms / 1000

    def reset(self) -> None:
        self.wait_ms = 0


class KafkaIntake:
    """One member of the consumer group. `run()` consumes until `stop()`; it survives broker and
    database outages (it backs off and reads the failed batch again) but never skips a record."""

    def __init__(
        self,
        ledger: LedgerPort,
        settings: Settings,
        limits: IntakeLimits,
        stats: IntakeStats | None = None,
        *,
        consumer_factory: Callable[[Settings], Any] = new_consumer,
        producer_factory: Callable[[Settings], Any] = new_producer,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.limits = limits
        self.stats = stats or IntakeStats()
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._stopping = threading.Event()
        self._backoff = Backoff(settings.kafka_retry_backoff_ms_max)
        # Set from the client's IO thread by the rebalance listener, read by the consumer thread.
        self._joined = False
        self._failing = False
        self._last_loop_at = time.monotonic()
        self._positions: dict[Any, int] = {}  # TopicPartition -> next offset to read
        self._dead_letter_limits = DeadLetterLimits.from_settings(settings)

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the loop to finish the batch in hand, commit it, leave the group and return."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def ready(self) -> bool:
        """In its group, its last batch done, and polling often enough to stay a member."""
        stalled_s = time.monotonic() - self._last_loop_at
        return (
            self._joined
            and not self._failing
            and not self.stopping
            and stalled_s < self.settings.kafka_poll_interval_ms_max / 1000
        )

    def run(self) -> None:
        while not self.stopping:
            try:
                self._consume()
            except Exception:
                log.exception("the Kafka consumer failed; starting it again")
                self._joined = False
                self._stopping.wait(self._backoff.next_s())

    # -- the loop -----------------------------------------------------------------------------------

    def _consume(self) -> None:
        settings = self.settings
        producer = self._producer_factory(settings)
        consumer = None
        try:
            consumer = self._consumer_factory(settings)
            consumer.subscribe([settings.kafka_topic], listener=_Rebalance(self))
            log.info("consuming %s in group %s", settings.kafka_topic, settings.kafka_group)
            while not self.stopping:
                self._last_loop_at = time.monotonic()
                polled = consumer.poll(
                    timeout_ms=settings.kafka_poll_timeout_ms, max_records=settings.kafka_batch_records_max
                )
                if polled:
                    batch = self.read(polled)
                    if self.process(consumer, producer, batch):
                        self._failing = False
                        self._backoff.reset()
                    else:
                        self._failing = True
                        self._rewind(consumer, batch)
                        self._stopping.wait(self._backoff.next_s())
                self._update_lag(consumer)
        finally:
            self._joined = False
            self.stats.assigned_partitions = 0
            self._close(consumer, producer)

    def _close(self, consumer: Any, producer: Any) -> None:
        timeout_s = self.settings.kafka_shutdown_timeout_s
        try:
            producer.close(timeout=timeout_s)
        except Exception as error:  # noqa: BLE001 - closing: nothing uncommitted depends on it
            log.warning("closing the producer failed: %s", error)
        if consumer is not None:
            try:
                # Leaves the group at once, so that the others take the partitions over without
                # waiting for the session timeout. Offsets are never committed implicitly.
                consumer.close(autocommit=False, timeout_ms=int(timeout_s * 1000))
            except Exception as error:  # noqa: BLE001 - the group drops this member after the session timeout
                log.warning("closing the consumer failed: %s", error)
        log.info("left group %s", self.settings.kafka_group)

    def read(self, polled: dict[Any, list[Any]]) -> PollBatch:
        """Sorts the records of one poll into events and dead letters, partition by partition."""
        batch = PollBatch()
        for partition, records in polled.items():
            if not records:
                continue
            batch.first_offsets[partition] = records[0].offset
            batch.next_offsets[partition] = records[-1].offset + 1
            batch.records += len(records)
            for record in records:
                read = read_value(record.value, self.limits)
                if isinstance(read, StockEvent):
                    if record.key is not None and record.key != read.store_id.encode():
                        batch.key_mismatches += 1
                    batch.events.append(read)
                else:
                    origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
                    headers = tuple((name, value or b"") for name, value in record.headers or ())
                    batch.dead_letters.append(DeadLetter(origin, record.key, record.value, headers, read))
        self.stats.records_consumed += batch.records
        return batch

    def process(self, consumer: Any, producer: Any, batch: PollBatch) -> bool:
        """Records, publishes, commits. False when the batch must be read again."""
        results: list[EventResult] = []
        if batch.events:
            try:
                results = self.ledger.submit_and_wait(batch.events)
            except Exception as error:  # noqa: BLE001 - nothing committed: the batch is read again
                self.stats.batches_failed += 1
                log.warning("recording %d events failed, reading them again: %r", len(batch.events), error)
                return False
            assert len(results) == len(batch.events), "one result per event"
        try:
            self.publish(producer, batch, results)
        except Exception as error:  # noqa: BLE001 - nothing committed: the batch is read again
            self.stats.batches_failed += 1
            log.warning("publishing results failed, reading the batch again: %r", error)
            return False
        self.commit(consumer, batch)
        self._count(batch, results)
        return True

    def publish(self, producer: Any, batch: PollBatch, results: list[EventResult]) -> None:
        """Sends one result per event and every dead letter; returns once the broker has them all."""
        settings = self.settings
        outbound = [result_record(settings.kafka_results_topic, result) for result in results]
        outbound += [
            dead_letter_record(settings.kafka_dlq_topic, letter, self._dead_letter_limits)
            for letter in batch.dead_letters
        ]
        futures = [
            producer.send(record.topic, key=record.key, value=record.value, headers=record.headers)
            for record in outbound
        ]
        producer.flush(timeout=settings.kafka_publish_timeout_s)
        for future in futures:
            if not future.succeeded():
                raise future.exception or KafkaError("a record was not acknowledged")

    def commit(self, consumer: Any, batch: PollBatch) -> None:
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in batch.next_offsets.items()}
        try:
            consumer.commit(offsets=offsets, timeout_ms=int(self.settings.kafka_commit_timeout_s * 1000))
        except CommitFailedError as error:
            # The group moved these partitions to another member, which reads them from the last
            # committed offset: the ledger answers what this batch recorded as duplicates.
            log.warning("offsets not committed, the group rebalanced: %s", error)
        except KafkaError as error:
            # The outcomes are durable and published; the next commit covers these offsets.
            log.warning("committing offsets failed: %r", error)
        else:
            self._positions.update(batch.next_offsets)

    def _count(self, batch: PollBatch, results: list[EventResult]) -> None:
        stats = self.stats
        for result in results:
            outcome = result.outcome.value
            stats.events_by_outcome[outcome] = stats.events_by_outcome.get(outcome, 0) + 1
        stats.dead_lettered += len(batch.dead_letters)
        stats.key_mismatches += batch.key_mismatches
        stats.records_committed += batch.records
        stats.batches_committed += 1
        if batch.key_mismatches:
            log.warning("%d events came with a record key other than their subject", batch.key_mismatches)

    def _rewind(self, consumer: Any, batch: PollBatch) -> None:
        """Moves each partition back to the batch's first record, so the next poll reads it again."""
        assigned = consumer.assignment()
        for partition, offset in batch.first_offsets.items():
            if partition in assigned:
                consumer.seek(partition, offset)

    def _update_lag(self, consumer: Any) -> None:
        lag: dict[tuple[str, int], int] = {}
        assigned = consumer.assignment()
        for partition in assigned:
            highwater = consumer.highwater(partition)
            position = self._positions.get(partition)
            if position is None:
                try:
                    position = consumer.position(partition, timeout_ms=POSITION_TIMEOUT_MS)
                except KafkaError:
                    position = None
                if position is None:
                    continue
                self._positions[partition] = position
            if highwater is not None:
                lag[(partition.topic, partition.partition)] = max(highwater - position, 0)
        self.stats.set_lag(lag)
        self.stats.assigned_partitions = len(assigned)

    # -- rebalances (called on the client's IO thread) ----------------------------------------------

    def on_assigned(self, assigned: list[Any]) -> None:
        self._positions = {}
        self._joined = True
        self.stats.rebalances += 1
        self.stats.assigned_partitions = len(assigned)
        log.info("assigned %s", _partitions_text(assigned))

    def on_revoked(self, revoked: list[Any]) -> None:
        # Every batch is committed before the next poll, so nothing is in flight here.
        log.info("revoked %s", _partitions_text(revoked))

    def on_lost(self, lost: list[Any]) -> None:
        self._joined = False
        log.warning("lost %s (this member was dropped from the group)", _partitions_text(lost))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, intake: KafkaIntake) -> None:
        self.intake = intake

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        self.intake.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        self.intake.on_assigned(assigned)

    def on_partitions_lost(self, lost: list[Any]) -> None:
        self.intake.on_lost(lost)


def _partitions_text(partitions: list[Any]) -> str:
    if not partitions:
        return "no partitions"
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
