"""The remembering partitioner chooses what Kafka's default partitioner chooses, key by key, and
chooses again when the topic's partition count changes."""

from __future__ import annotations

from kafka.partitioner import DefaultPartitioner

from ledger.kafka.partitioner import RememberingPartitioner


class Cluster:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"results"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


def _choices(partitioner, cluster: Cluster, keys: list[bytes]) -> list[int]:
    return [partitioner.partition("results", key, key, b"v", b"v", cluster) for key in keys]


def test_the_default_partitioners_choice_for_every_key_asked_again_and_again() -> None:
    keys = [f"store-{i}".encode() for i in range(200)]
    cluster = Cluster(7)
    expected = _choices(DefaultPartitioner(), cluster, keys)
    remembering = RememberingPartitioner()
    assert _choices(remembering, cluster, keys) == expected
    assert _choices(remembering, cluster, keys) == expected  # remembered
    assert len(set(expected)) > 1


def test_a_new_partition_count_is_chosen_for_anew() -> None:
    keys = [f"store-{i}".encode() for i in range(200)]
    remembering = RememberingPartitioner()
    _choices(remembering, Cluster(3), keys)
    wider = Cluster(12)
    assert _choices(remembering, wider, keys) == _choices(DefaultPartitioner(), wider, keys)


def test_a_record_without_a_key_goes_to_one_of_the_topics_partitions() -> None:
    cluster = Cluster(4)
    chosen = {
        RememberingPartitioner().partition("results", None, None, b"v", b"v", cluster) for _ in range(50)
    }
    assert chosen <= {0, 1, 2, 3}
