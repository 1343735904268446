"""The intake's pipeline: the batches between their poll and their commit, in poll order, what
each waits for, which may be committed, and where each partition is read again after a failure.

A batch's offsets may be committed once it and every batch polled before it are recorded and
their results acknowledged by the broker; so commits go in poll order. A batch whose results were
not acknowledged is published again, with every batch sent after it, before any of them counts as
done; a batch that is to be read again is read again with every batch after it, from their first
offsets.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ledger.domain.model import StockEvent
from ledger.kafka.dead_letters import DeadLetter
from ledger.kafka.publisher import Delivery
from ledger.kafka.recorder import Recording
from ledger.kafka.records import ConsumerRecord
from ledger.results import EventResult

TopicPartition = Any  # kafka.TopicPartition, a named tuple (kafka-python ships no type hints)


@dataclass(slots=True)
class PollBatch:
    """One poll's records: the events to record (with the record each came from) and the records
    to dead-letter, and where each partition starts and ends."""

    events: list[StockEvent] = field(default_factory=list)
    # The record each event was read from, one per event, in order, as the consumer gave it: its
    # dead letter is made only should the writer refuse the event (rare; making one for every
    # event cost about 4 µs an event).
    event_records: list[ConsumerRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)  # last offset + 1
    records: int = 0
    key_mismatches: int = 0


@dataclass(slots=True, eq=False)
class InFlight:
    """A batch on its way: recording, then publishing (`deliveries`), then committed and gone."""

    sequence: int  # in poll order, from 1, for logs
    batch: PollBatch
    recording: Recording
    results: list[EventResult] = field(default_factory=list)  # of the events recorded
    refused: list[DeadLetter] = field(default_factory=list)  # the events the writer refused alone
    deliveries: list[Delivery] | None = None
    published_at_s: float = 0.0  # time.monotonic()
    publishes: int = 0  # times its results were handed to a producer
    trace_parent: str | None = None  # with tracing on, its intake span (kafka/tracing.py)

    @property
    def published(self) -> bool:
        return self.deliveries is not None

    def __str__(self) -> str:
        batch = self.batch
        return f"batch {self.sequence} ({len(batch.events)} events, {len(batch.dead_letters)} dead letters)"


class Pipeline:
    """At most `batches_max` batches in flight, oldest first."""

    def __init__(self, batches_max: int) -> None:
        self.batches_max = batches_max
        self._flights: deque[InFlight] = deque()

    def __len__(self) -> int:
        return len(self._flights)

    def __iter__(self) -> Iterator[InFlight]:
        return iter(self._flights)

    @property
    def full(self) -> bool:
        return len(self._flights) >= self.batches_max

    def first_recording(self) -> Recording | None:
        """The oldest batch's recording still under way, if any."""
        return next((f.recording for f in self._flights if not f.recording.done()), None)

    def append(self, flight: InFlight) -> None:
        assert not self.full, f"more than {self.batches_max} batches in flight"
        if self._flights:
            assert flight.sequence > self._flights[-1].sequence, "batches in poll order"
        self._flights.append(flight)

    def take(self, count: int) -> list[InFlight]:
        """Removes the `count` oldest batches (done: about to be committed)."""
        assert count <= len(self._flights), "taking batches that are not in flight"
        return [self._flights.popleft() for _ in range(count)]

    def publish_again(self, failed: InFlight) -> list[InFlight]:
        """Marks the batch whose publish failed, and every batch sent after it, as not published:
        their results go out again (a batch after it may have reached the broker, but none counts
        as done before the failed one is). Returns them, oldest first."""
        assert failed in self._flights, f"{failed} is not in flight"
        again: list[InFlight] = []
        for flight in itertools.dropwhile(lambda f: f is not failed, self._flights):
            if flight.published:
                flight.deliveries = None
                again.append(flight)
        return again

    def rewind_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the first offset in flight: where reading must start again."""
        offsets: dict[TopicPartition, int] = {}
        for flight in self._flights:
            for partition, offset in flight.batch.first_offsets.items():
                offsets.setdefault(partition, offset)
        return offsets

    def clear(self) -> list[InFlight]:
        """Drops every batch in flight; those not yet recording never will be."""
        dropped = list(self._flights)
        self._flights.clear()
        for flight in dropped:
            flight.recording.cancel()
        return dropped


def commit_offsets(flights: list[InFlight]) -> dict[TopicPartition, int]:
    """The offsets that commit these batches (in poll order): each partition's last next offset."""
    offsets: dict[TopicPartition, int] = {}
    for flight in flights:
        offsets.update(flight.batch.next_offsets)
    return offsets


@dataclass(slots=True)
class Uncommitted:
    """The records and batches of offsets not yet committed: counted once their commit succeeds."""

    records: int = 0
    batches: int = 0

    def add(self, batch: PollBatch) -> None:
        self.records += batch.records
        self.batches += 1
