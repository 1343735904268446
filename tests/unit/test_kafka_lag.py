"""The intake's lag gauge (ledger/kafka/lag.py), against a consumer that knows some committed
offsets, positions and high-water marks and not others."""

from __future__ import annotations

from typing import Any

from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from ledger.kafka.lag import partition_lag

P0, P1, P2 = (TopicPartition("ledger.events", n) for n in range(3))


class Consumer:
    def __init__(
        self,
        highwater: dict[Any, int | None],
        positions: dict[Any, int | Exception],
        committed: dict[Any, int | Exception | None] | None = None,
    ) -> None:
        self.highwaters = highwater
        self.positions = positions
        self.committed_offsets = committed or {}
        self.asked: list[Any] = []

    def highwater(self, partition: Any) -> int | None:
        return self.highwaters.get(partition)

    def position(self, partition: Any, timeout_ms: int) -> int:
        self.asked.append(partition)
        answer = self.positions[partition]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def committed(self, partition: Any, timeout_ms: int) -> int | None:
        answer = self.committed_offsets.get(partition)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_lag_is_the_high_water_mark_past_the_next_offset_never_below_zero() -> None:
    consumer = Consumer({P0: 10, P1: 5}, {})
    positions = {P0: 4, P1: 7}  # P1: the broker's mark not caught up with a commit yet
    assert partition_lag(consumer, {P0, P1}, positions) == {("ledger.events", 0): 6, ("ledger.events", 1): 0}
    assert consumer.asked == []


def test_a_missing_position_is_asked_once_and_kept() -> None:
    consumer = Consumer({P0: 10}, {P0: 3})
    positions: dict[Any, int] = {}
    assert partition_lag(consumer, {P0}, positions) == {("ledger.events", 0): 7}
    assert positions == {P0: 3}
    partition_lag(consumer, {P0}, positions)
    assert consumer.asked == [P0]


def test_a_partition_without_a_position_or_a_high_water_mark_is_left_out() -> None:
    consumer = Consumer({P0: 10, P1: None, P2: 8}, {P0: KafkaTimeoutError("no answer"), P2: 2})
    positions = {P1: 1}
    assert partition_lag(consumer, {P0, P1, P2}, positions) == {("ledger.events", 2): 6}
    assert P0 not in positions


def test_a_missing_offset_is_the_committed_one_not_the_position_past_records_in_flight() -> None:
    # The consumer has read 0..6 (in flight, or offsets with no record for the ledger such as a
    # transaction's marker): nothing of that is committed, so all of it is lag.
    consumer = Consumer({P0: 10}, {P0: 7}, {P0: 0})
    positions: dict[Any, int] = {}
    assert partition_lag(consumer, {P0}, positions) == {("ledger.events", 0): 10}
    assert positions == {P0: 0}
    assert consumer.asked == []


def test_a_partition_the_group_never_committed_takes_the_consumers_position() -> None:
    consumer = Consumer({P0: 10, P1: 8}, {P0: 4, P1: 3}, {P0: None, P1: KafkaTimeoutError("no answer")})
    positions: dict[Any, int] = {}
    assert partition_lag(consumer, {P0, P1}, positions) == {("ledger.events", 0): 6}
    assert positions == {P0: 4}
