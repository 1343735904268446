"""The intake's lag: per assigned partition, the records the broker holds past this member's next
offset to read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

if TYPE_CHECKING:
    from ledger.kafka.pipeline import TopicPartition

# How long the lag waits for a partition's position the consumer has not fetched yet (once per
# partition and assignment: the position is kept).
POSITION_TIMEOUT_MS = 200


def partition_lag(
    consumer: Any, assigned: set[TopicPartition], positions: dict[TopicPartition, int]
) -> dict[tuple[str, int], int]:
    """`positions`: the next offset to read of each partition, once committed; one missing is asked
    of the consumer and kept there. A partition whose position or high-water mark is not known yet
    is left out."""
    lag: dict[tuple[str, int], int] = {}
    for partition in assigned:
        highwater = consumer.highwater(partition)
        position = positions.get(partition)
        if position is None:
            try:
                position = consumer.position(partition, timeout_ms=POSITION_TIMEOUT_MS)
            except KafkaError:
                position = None
            if position is None:
                continue
            positions[partition] = position
        if highwater is not None:
            lag[(partition.topic, partition.partition)] = max(highwater - position, 0)
    return lag
