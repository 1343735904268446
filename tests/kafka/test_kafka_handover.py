"""No broker: a member hands its partitions over (a rebalance) while its publishes fail.

Readiness. A member whose publishes failed hands its partitions over uncommitted (their next owner
reads them again). Given other partitions that stay idle, nothing of it is pending: no batch in
flight, no result waiting. It was still reported not ready (its producer's last publish had
failed) until its next commit, which an idle partition never brings: /readyz 503 for good (found
by review). Readiness says what holds now: ready once it holds nothing that failed, and not ready
again as soon as a publish of its own fails.

The revoke's bound. A producer that failed for good just before the rebalance was built anew in
the revoke callback, which then waited for a broker past `kafka_revoke_timeout_ms`."""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka.errors import NotLeaderForPartitionError, OutOfOrderSequenceNumberError
from kafka.future import Future
from kafka.structs import TopicPartition
from kafka_harness import envelope, wait_until

from ledger.bootstrap import intake_limits
from ledger.config import Settings
from ledger.domain.model import Outcome, StockEvent
from ledger.kafka.consumer import KafkaIntake
from ledger.kafka.handle import ConsumerHandle
from ledger.results import EventResult

DEADLINE_S = 10.0
TOPIC = "stock.events"
FIRST = TopicPartition(TOPIC, 0)  # held first: its results are never acknowledged
SECOND = TopicPartition(TOPIC, 1)  # given at the rebalance: no record comes
EVENTS = 3
REVOKE_TIMEOUT_MS = 1000
REVOKE_SLACK_S = 0.5
SLOW_BUILD_S = 2.5  # below the 5 s a real producer may wait for a broker: enough to pass the bound


class Record:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = TOPIC, FIRST.partition, offset
        self.key = b"store-1"
        self.value = envelope(f"ev-{offset}", "store-1", "stock.receipt", [("SKU-1", 1)])
        self.timestamp = 0
        self.headers: list[tuple[str, bytes]] = []


class HandingOver:
    """Assigns FIRST and its records; once `rebalance` is set, its next poll revokes FIRST and
    assigns SECOND, where nothing comes."""

    def __init__(self) -> None:
        self.rebalance = threading.Event()
        self.assigned: set[Any] = set()
        self.read_to = 0
        self.commits: list[dict[Any, int]] = []
        self.polls = 0
        self.revoke_s: float | None = None  # how long the revoke callback took
        self._listener: Any = None
        self._never = threading.Event()

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.polls += 1
        if not self.assigned:
            self.assigned = {FIRST}
            self._listener.on_partitions_assigned([FIRST])
        elif self.rebalance.is_set() and FIRST in self.assigned:
            began = time.monotonic()
            self._listener.on_partitions_revoked([FIRST])
            self.revoke_s = time.monotonic() - began
            self.assigned = {SECOND}
            self._listener.on_partitions_assigned([SECOND])
        if FIRST in self.assigned and self.read_to < EVENTS:
            records = [Record(offset) for offset in range(self.read_to, EVENTS)]
            self.read_to = EVENTS
            return {FIRST: records}
        self._never.wait(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def paused(self) -> set[Any]:
        return set()

    def seek(self, partition: Any, offset: int) -> None:
        if partition == FIRST:
            self.read_to = offset

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        self.commits.append({partition: meta.offset for partition, meta in offsets.items()})

    def commit_async(self, offsets: dict[Any, Any], callback: Any) -> None:
        self.commit(offsets, 0)

    def highwater(self, partition: Any) -> int:
        return EVENTS if partition == FIRST else 0

    def committed(self, partition: Any, timeout_ms: int) -> int:
        return 0

    def position(self, partition: Any, timeout_ms: int) -> int:
        return self.read_to if partition == FIRST else 0

    def close(self, autocommit: bool, timeout_ms: int) -> None:
        pass


class Ledger:
    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        return [
            EventResult(event.event_id, event.source, event.store_id, Outcome.ACCEPTED, position=1)
            for event in events
        ]


class Refusing:
    """A producer whose every record fails: its partition's leader keeps moving (retriable)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, **_: Any) -> Future:
        self.sent += 1
        return Future().failure(NotLeaderForPartitionError("the leader moved"))

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        return None


def test_a_member_handed_over_its_failing_partitions_is_ready_with_idle_ones_and_nothing_pending() -> None:
    consumer = HandingOver()
    producer = Refusing()
    chosen = Settings(
        kafka_bootstrap="nowhere:1",
        kafka_poll_timeout_ms=10,
        kafka_retry_backoff_ms_max=20,
        kafka_republishes_max=1000,  # published again and again until the hand-over
        kafka_producer_failures_max=1000,  # and by the same producer
    )
    intake = KafkaIntake(
        Ledger(),
        chosen,
        intake_limits(chosen),
        consumer_factory=lambda _: consumer,
        producer_factory=lambda _: producer,
    )
    handle = ConsumerHandle(intake).start()
    try:
        wait_until(lambda: intake.stats.batches_republished >= 2, DEADLINE_S, "publishes failing")
        assert not intake.ready
        consumer.rebalance.set()
        wait_until(lambda: consumer.assigned == {SECOND}, DEADLINE_S, "the hand-over")
        polls = consumer.polls
        wait_until(lambda: consumer.polls > polls + 5, DEADLINE_S, "idle polls")
        assert consumer.commits == []  # nothing of FIRST was acknowledged, so nothing committed
        wait_until(
            lambda: intake.ready,
            DEADLINE_S,
            f"ready with nothing pending (not ready because: {intake.not_ready_because})",
        )
    finally:
        assert handle.stop(DEADLINE_S)


class LostItsState(Refusing):
    """A producer the broker no longer knows (it restarted empty): closed and built anew at once.
    Its first send starts the rebalance, so that the partitions are revoked before a new one is built."""

    def __init__(self, consumer: HandingOver) -> None:
        super().__init__()
        self.consumer = consumer

    def send(self, topic: str, **_: Any) -> Future:
        self.sent += 1
        self.consumer.rebalance.set()
        return Future().failure(OutOfOrderSequenceNumberError("the broker restarted empty"))


class Acknowledging(Refusing):
    def send(self, topic: str, **_: Any) -> Future:
        self.sent += 1
        return Future().success(None)


def test_a_revoke_does_not_wait_for_a_producer_to_be_built_past_its_timeout() -> None:
    """The producer failed for good just before a rebalance: the revoke's publish built the new one,
    and building waits up to BROKER_CONTACT_TIMEOUT_S (5 s) for a broker, past the revoke's bound
    (`kafka_revoke_timeout_ms`, 3 s, so with the session's heartbeats held about 8 s: over a 6 s
    session). Then the batches are handed over unpublished, as any the revoke cannot finish in
    time; the new producer is built by the loop after."""
    consumer = HandingOver()
    built: list[Refusing] = []

    def build(_: Settings) -> Refusing:
        if built:
            time.sleep(SLOW_BUILD_S)  # as a new producer waits for a broker's first answer
            producer: Refusing = Acknowledging()
        else:
            producer = LostItsState(consumer)
        built.append(producer)
        return producer

    chosen = Settings(
        kafka_bootstrap="nowhere:1",
        kafka_poll_timeout_ms=10,
        kafka_retry_backoff_ms_max=20,
        kafka_revoke_timeout_ms=REVOKE_TIMEOUT_MS,
    )
    intake = KafkaIntake(
        Ledger(), chosen, intake_limits(chosen), consumer_factory=lambda _: consumer, producer_factory=build
    )
    handle = ConsumerHandle(intake).start()
    try:
        wait_until(lambda: consumer.assigned == {SECOND}, DEADLINE_S, "the hand-over")
        assert consumer.revoke_s is not None
        assert consumer.revoke_s < REVOKE_TIMEOUT_MS / 1000 + REVOKE_SLACK_S, "the revoke outlasted its bound"
        assert consumer.commits == []  # handed over unpublished: the next owner reads FIRST again
        assert consumer.read_to == 0
        wait_until(lambda: len(built) == 2 and intake.ready, DEADLINE_S, "a new producer, and ready")
    finally:
        assert handle.stop(DEADLINE_S)
