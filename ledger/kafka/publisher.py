"""The intake's producer: sends results and dead letters without waiting on each, says when the
broker has acknowledged them, and builds the producer anew once it has failed for good.

Two kinds of failure are told apart. A record the broker can never take (too large, invalid) would
fail on every retry and hold its partition for ever: it is sent in its cut-down form
(`Outbound.fallback`), or given up with an error in the log and a metric. Any other failure may pass
(the broker away, a leader moving): the batch's results are published again after a backoff
(ledger/kafka/consumer.py), once the producer has given its records up: until its delivery timeout
it may still deliver them (`acknowledged_within_s`). But a producer can also fail for good: an
idempotent producer whose broker restarted empty has lost its sequence state there
(`PRODUCER_STATE_LOST`, or librdkafka's fatal error, `ProducerFailedForGood`), and every later send
of it fails. The producer (ledger/kafka/producer.py) reports its errors as kafka-python's classes,
so they are told apart here whichever client sends. After such an error, any other non-retriable
one, or `kafka_producer_failures_max` failed publishes in a row, the producer is closed at once and
a new one built, which publishes the batch again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import (
    CorruptRecordError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    ProducerFencedError,
    RecordListTooLargeError,
    UnknownProducerIdError,
)

from ledger.config import Settings
from ledger.kafka.metrics import IntakeStats
from ledger.kafka.producer import BROKER_CONTACT_TIMEOUT_S, verdict_within_s
from ledger.kafka.records import Outbound

log = logging.getLogger("ledger.kafka")

# Errors about the record itself: sending it again can never succeed.
UNSENDABLE = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordError,
    InvalidTimestampError,
)
# The broker no longer knows this producer's id, epoch or sequence numbers (it restarted empty, or
# another producer took the id over): no send of this producer can succeed again.
PRODUCER_STATE_LOST = (
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    ProducerFencedError,
)


class PublishFailed(Exception):
    """A record was not acknowledged (its cause is the producer's error); a retry may succeed."""


@dataclass(slots=True)
class Delivery:
    """One record on its way; `future` is the producer's (`is_done`, `succeeded()`, `exception`),
    None when the record was given up."""

    record: Outbound
    future: Any


class Publisher:
    """Used by one thread at a time: the consumer thread, or its rebalance listener."""

    def __init__(self, settings: Settings, factory: Callable[[Settings], Any], stats: IntakeStats) -> None:
        self.settings = settings
        self.failures_max = settings.kafka_producer_failures_max
        self.failures = 0  # failed publishes in a row
        self._factory = factory
        self._stats = stats
        self._producer: Any = None

    @property
    def built(self) -> bool:
        return self._producer is not None

    @property
    def acknowledged_within_s(self) -> float:
        """How long a record may wait for the broker before its batch is published again
        (`verdict_within_s`); readiness says long before (`kafka_unanswered_ms_max`) that results
        are waiting."""
        return verdict_within_s(self.settings.kafka_publish_timeout_s)

    @property
    def ready(self) -> bool:
        """A producer is built and its last publish did not fail (since the last hand-over)."""
        return self._producer is not None and self.failures == 0

    def open(self, deadline_s: float | None = None) -> Any:
        """The producer, built first if need be; not when that could outlast `deadline_s`
        (time.monotonic()): a new producer waits for a broker's answer, up to BROKER_CONTACT_TIMEOUT_S,
        and a rebalance's revoke, which must end within `kafka_revoke_timeout_ms` (3 s), hands its
        batches over unpublished instead (else the revoke would take up to 8 s)."""
        if self._producer is None:
            if deadline_s is not None and deadline_s - time.monotonic() < BROKER_CONTACT_TIMEOUT_S:
                raise PublishFailed("no producer, and no time to build one before the deadline")
            try:
                self._producer = self._factory(self.settings)
            except Exception as error:
                raise PublishFailed(f"building the producer failed: {error!r}") from error
        return self._producer

    def send(self, records: list[Outbound], deadline_s: float | None = None) -> list[Delivery]:
        """Hands every record to the producer, without waiting for the broker; by `deadline_s`
        (time.monotonic()) when given, else each within the publish timeout."""
        producer = self.open(deadline_s)
        return [self._send(producer, record, deadline_s) for record in records]

    def acknowledged(self, deliveries: list[Delivery]) -> bool:
        """True once the broker has every record; False while some are on their way. Raises
        PublishFailed when one failed; a record the broker can never take is sent as its fallback."""
        for index, delivery in enumerate(deliveries):
            future = delivery.future
            if future is None:
                continue
            # Done is read once: looking at a librdkafka future serves its delivery reports, so a
            # second look may find it done (and well) where the first did not.
            if not future.is_done:
                return False
            if future.succeeded():
                continue
            error = future.exception
            if isinstance(error, UNSENDABLE):
                deliveries[index] = self._instead(self.open(), delivery.record, error)
                return False
            raise PublishFailed(f"{delivery.record.what} was not acknowledged: {error!r}") from error
        return True

    def flush(self, timeout_s: float) -> None:
        """Waits (at most `timeout_s`) for the broker to answer every record sent."""
        if self._producer is None or timeout_s <= 0:
            return
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as error:
            log.warning("flushing the producer: %r", error)

    def succeeded(self) -> None:
        self.failures = 0

    def nothing_pending(self) -> None:
        """The batches whose publishes failed are handed over (a rebalance): the row of failures
        ends with them, and the next publish says whether this producer can."""
        self.failures = 0

    def failed(self, error: BaseException) -> None:
        """Counts a failed publish; closes the producer when it has failed for good."""
        self.failures += 1
        if self._producer is None:
            return
        cause = error.__cause__ if isinstance(error, PublishFailed) else error
        fatal = isinstance(cause, PRODUCER_STATE_LOST) or (
            isinstance(cause, KafkaError) and not cause.retriable and not isinstance(cause, UNSENDABLE)
        )
        if fatal or self.failures >= self.failures_max:
            log.warning(
                "closing the producer after %d failed publishes in a row (last: %r); building a new one",
                self.failures,
                cause,
            )
            self._discard(self._producer)
            self._producer = None
            self._stats.producers_rebuilt += 1

    def close(self, timeout_s: float) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except Exception as error:  # noqa: BLE001 - closing: nothing uncommitted depends on it
            log.warning("closing the producer failed: %r", error)

    def _send(self, producer: Any, record: Outbound, deadline_s: float | None = None) -> Delivery:
        try:
            future = producer.send(
                record.topic,
                key=record.key,
                value=record.value,
                headers=record.headers,
                buffer_wait_s=None if deadline_s is None else max(deadline_s - time.monotonic(), 0.0),
            )
        except UNSENDABLE as error:
            return self._instead(producer, record, error, deadline_s)
        except Exception as error:
            raise PublishFailed(f"sending {record.what} failed: {error!r}") from error
        return Delivery(record, future)

    def _instead(
        self, producer: Any, record: Outbound, error: BaseException, deadline_s: float | None = None
    ) -> Delivery:
        """What is sent when `record` never can be: its fallback, else nothing (logged)."""
        if record.fallback is None:
            log.error("%s can never be sent and is given up: %r", record.what, error)
            self._stats.records_unpublishable += 1
            return Delivery(record, None)
        log.warning("%s was refused (%r); sending it cut down", record.what, error)
        fallback = record.fallback if isinstance(record.fallback, Outbound) else record.fallback()
        return self._send(producer, fallback, deadline_s)

    def _discard(self, producer: Any) -> None:
        """Closes a failed producer on a thread of its own: its pending records (all to be sent
        again) may take until their delivery timeout to fail, and the intake must not wait."""

        def close() -> None:
            try:
                producer.close(timeout=self.settings.kafka_shutdown_timeout_s)
            except Exception as error:  # noqa: BLE001 - it is dropped either way
                log.warning("closing the failed producer: %r", error)

        threading.Thread(target=close, name="ledger-kafka-producer-close", daemon=True).start()
