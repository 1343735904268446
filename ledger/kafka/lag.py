"""The intake's lag: per assigned partition, the records the broker holds past the group's
committed offset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

if TYPE_CHECKING:
    from ledger.kafka.pipeline import TopicPartition

# How long the lag waits for a partition's committed offset or position the consumer does not
# know yet (once per partition and assignment: it is kept).
POSITION_TIMEOUT_MS = 200


def partition_lag(
    consumer: Any, assigned: set[TopicPartition], positions: dict[TopicPartition, int]
) -> dict[tuple[str, int], int]:
    """`positions`: the committed offset (the next offset to read, once committed) of each
    partition; one missing is asked of the group and kept there. Its committed offset, not the
    consumer's position: that may already be past records still in flight, or past offsets that
    hold no record for the ledger (a transaction's marker) and are not committed yet. Only a
    partition with no offset committed at all takes the consumer's position. A partition whose
    offset or high-water mark is not known yet is left out."""
    lag: dict[tuple[str, int], int] = {}
    for partition in assigned:
        highwater = consumer.highwater(partition)
        position = positions.get(partition)
        if position is None:
            try:
                position = consumer.committed(partition, timeout_ms=POSITION_TIMEOUT_MS)
                if position is None:
                    position = consumer.position(partition, timeout_ms=POSITION_TIMEOUT_MS)
            except KafkaError:
                position = None
            if position is None:
                continue
            positions[partition] = position
        if highwater is not None:
            lag[(partition.topic, partition.partition)] = max(highwater - position, 0)
    return lag
