"""`ledger_kafka_records_committed` and `ledger_kafka_batches` count what the broker took: a batch
whose commit failed is counted when a later commit carries its offsets, never before, and one that
the group took away before it was committed is never counted by this member."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import TopicPartition

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.kafka.consumer import KafkaIntake
from ledger.kafka.pipeline import InFlight, PollBatch
from ledger.results import EventResult

PARTITION = TopicPartition("stock.events", 0)


class Consumer:
    """kafka-python's consumer, as far as committing goes: each commit fails with the next of
    `failures` (None: it succeeds), and async commits wait for the test to answer them."""

    def __init__(self, *failures: Exception | None) -> None:
        self.failures = list(failures)
        self.committed: list[int] = []
        self.callbacks: list[Callable[[Any, Any], None]] = []

    def commit(self, offsets: dict[TopicPartition, Any], timeout_ms: int) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.committed.append(offsets[PARTITION].offset)

    def commit_async(self, offsets: dict[TopicPartition, Any], callback: Callable[[Any, Any], None]) -> None:
        self.committed.append(offsets[PARTITION].offset)
        self.callbacks.append(callback)


class NoLedger:
    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        raise AssertionError("nothing is recorded here")


def intake() -> KafkaIntake:
    settings = Settings(kafka_bootstrap="localhost:9092")
    return KafkaIntake(NoLedger(), settings, intake_limits(settings))


def flight(first: int, records: int) -> InFlight:
    batch = PollBatch(records=records)
    batch.next_offsets[PARTITION] = first + records
    return InFlight(sequence=first, batch=batch, recording=None)  # type: ignore[arg-type]


def counted(member: KafkaIntake) -> tuple[int, int]:
    return member.stats.records_committed, member.stats.batches_committed


def test_a_failed_commit_is_counted_once_a_later_one_carries_its_offsets() -> None:
    member, consumer = intake(), Consumer(KafkaError("broker away"), None)
    member._commit(consumer, [flight(0, 5)], wait=True)
    assert counted(member) == (0, 0)
    member._commit(consumer, [flight(5, 3)], wait=True)
    assert consumer.committed == [8]
    assert counted(member) == (8, 2)


def test_batches_the_group_took_away_are_not_counted_by_this_member() -> None:
    member, consumer = intake(), Consumer(CommitFailedError("rebalanced"), None)
    member._commit(consumer, [flight(0, 5)], wait=True)
    member.on_assigned([PARTITION])  # another member read them again from the last commit
    member._commit(consumer, [flight(0, 2)], wait=True)
    assert counted(member) == (2, 1)


def test_an_async_commit_counts_when_the_broker_answers_it() -> None:
    member, consumer = intake(), Consumer()
    member._commit(consumer, [flight(0, 4)], wait=False)
    assert counted(member) == (0, 0)
    consumer.callbacks.pop()({}, KafkaError("not taken"))
    assert counted(member) == (0, 0)
    member._commit(consumer, [flight(4, 6)], wait=False)
    consumer.callbacks.pop()({}, None)
    assert counted(member) == (6, 1)
