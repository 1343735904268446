"""The producer's partitioner: Kafka's default choice (murmur2 of the key), remembered per key.

Every result record is keyed by its store id, so the same few keys are hashed again and again; the
pure-Python murmur2 of kafka-python's DefaultPartitioner, with the sorting and copying around it, was
about 7% of the Kafka intake's CPU (a profile of bench/intake_bench.py). The partition chosen is the
default partitioner's, so a key's records land where any Kafka client would put them, and it is
chosen anew when the topic's partition count changes.
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner import DefaultPartitioner
from kafka.partitioner.abc import Partitioner

KEYS_REMEMBERED_MAX = 65_536  # (topic, key) pairs; past it, forgotten all at once


class RememberingPartitioner(Partitioner):  # type: ignore[misc]  # kafka-python is untyped
    def __init__(self) -> None:
        self._default = DefaultPartitioner()
        self._chosen: dict[tuple[str, bytes], tuple[int, int]] = {}  # -> (partition count, partition)

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if serialized_key is None:  # no key: the default's random choice, nothing to remember
            return int(self._default.partition(topic, key, serialized_key, value, serialized_value, cluster))
        partitions = cluster.partitions_for_topic(topic)
        count = len(partitions) if partitions else 0
        remembered = self._chosen.get((topic, serialized_key))
        if remembered is not None and remembered[0] == count:
            return remembered[1]
        chosen = int(self._default.partition(topic, key, serialized_key, value, serialized_value, cluster))
        if len(self._chosen) >= KEYS_REMEMBERED_MAX:
            self._chosen.clear()
        self._chosen[(topic, serialized_key)] = (count, chosen)
        return chosen
