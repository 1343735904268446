"""A consumer with no broker behind it, for the intake's own tests: assigned one partition on its
first poll, after which each poll waits out its timeout and returns nothing. Subclasses say where the
partition's offsets stand and what happens while a poll waits."""

from __future__ import annotations

import threading
from typing import Any

from kafka.structs import TopicPartition


class OnePartitionConsumer:
    PARTITION = TopicPartition("stock.events", 0)
    highwater_offset = 0
    committed_offset = 0
    position_offset = 0

    def __init__(self) -> None:
        self.polls = 0
        self._listener: Any = None
        self._assigned = False
        self._never = threading.Event()

    def wait_out(self, timeout_s: float) -> None:
        """What a poll does meanwhile: here, nothing comes."""
        self._never.wait(timeout_s)

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if not self._assigned:
            self._assigned = True
            self._listener.on_partitions_assigned([self.PARTITION])
        self.wait_out(timeout_ms / 1000)
        self.polls += 1
        return {}

    def assignment(self) -> set[Any]:
        return {self.PARTITION} if self._assigned else set()

    def paused(self) -> set[Any]:
        return set()

    def highwater(self, partition: Any) -> int:
        return self.highwater_offset

    def committed(self, partition: Any, timeout_ms: int) -> int:
        return self.committed_offset

    def position(self, partition: Any, timeout_ms: int) -> int:
        return self.position_offset

    def close(self, autocommit: bool, timeout_ms: int) -> None:
        pass
