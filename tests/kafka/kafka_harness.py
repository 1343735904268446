"""Test harness for the Kafka intake: a Tansu broker, embedded PostgreSQL, `ledger consume` processes,
topic readers, and a reference ledger to check every level against."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from ledger.bootstrap import build_ledger, intake_limits
from ledger.config import Settings
from ledger.domain.model import PRODUCER_EVENT_TYPES, StockEvent
from ledger.kafka.records import read_value
from ledger.projections.queries import HistoryFilter
from ledger.service import Ledger
from ledger.writer.socket_path import lock_path

REPO = Path(__file__).resolve().parents[2]
CRASHING_CONSUME = Path(__file__).resolve().parent / "crashing_consume.py"
CONSUME_BESIDE_WRITER = Path(__file__).resolve().parent / "consume_beside_writer.py"
POLL_S = 0.1
HISTORY_PAGE = 1000
# Short group timings: Tansu completes a join after about half the session timeout.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 1000
# For tests that kill a consumer -9 and wait for its partitions to move: a member that never left
# is dropped when its session ends, so a consumer joining after it got its partitions about 11 s
# after its start with the session above, about 2 s with this one. Still six heartbeats a session.
QUICK_REJOIN_ENV = {"LEDGER_KAFKA_SESSION_TIMEOUT_MS": "3000", "LEDGER_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
PRODUCE_REQUEST_BYTES_MAX = 1024 * 1024  # kafka-python's default


def intake_settings(broker: Broker, database_url: str, name: str, partitions: int, **extra: Any) -> Settings:
    """Settings of an in-process intake on new topics: short group timeouts and waits, so that a
    test's joins, retries and polls take seconds; `extra` sets the limits a test is about."""
    topics = broker.new_topics(name, partitions=partitions)
    return Settings(
        database_url=database_url,
        kafka_bootstrap=broker.bootstrap,
        kafka_topic=topics.events,
        kafka_results_topic=topics.results,
        kafka_dlq_topic=topics.dlq,
        kafka_group=topics.group,
        kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
        kafka_heartbeat_interval_ms=HEARTBEAT_MS,
        kafka_retry_backoff_ms_max=200,
        kafka_poll_timeout_ms=200,
        **extra,
    )


@contextlib.contextmanager
def started_ledger(settings: Settings) -> Iterator[Ledger]:
    """A ledger on those settings, started, and stopped at the end."""
    started = build_ledger(settings)
    started.start()
    try:
        yield started
    finally:
        started.stop()


def wait_until(condition: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """Polls `condition` until it returns something truthy; fails the test at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {deadline_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM to the process group, then SIGKILL if it has not exited in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout_s)
    # Children left behind by a killed leader (none expected): the group goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# -- the broker and the database ----------------------------------------------------------------------


class Broker:
    """A memory-only Tansu broker on 127.0.0.1, in its own process group."""

    def __init__(self, log_dir: Path) -> None:
        from ledger.kafka.tansu import start_tansu

        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_dir / "tansu.log"
        with self.log_path.open("wb") as log:
            try:
                self.process = start_tansu(self.port, memory_only=True, output=log)
            except RuntimeError as error:
                raise AssertionError(f"{error}\n{self.log_path.read_text()}") from None
        self._names = itertools.count(1)

    def new_topics(self, prefix: str, partitions: int) -> Topics:
        """Fresh events, results and dead-letter topics (and a group name) for one test."""
        name = f"{prefix}-{next(self._names)}"
        topics = Topics(name, f"{name}.results", f"{name}.dlq", f"ledger-{name}", partitions)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(topic, partitions, 1) for topic in topics.all])
        finally:
            admin.close()
        return topics

    def group_members(self, group: str) -> list[Any]:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        # kafka-python cannot read Tansu's authorized-operations bits; the members are all we need.
        admin._process_acl_operations = lambda obj: obj
        try:
            return list(admin.describe_groups([group])[group]["members"])
        finally:
            admin.close()

    def committed(self, group: str) -> dict[int, int]:
        """The group's committed offsets, by partition."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            offsets = admin.list_group_offsets({group: None})[group]
        finally:
            admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    def caught_up(self, topics: Topics, sent: Iterable[Sent]) -> bool:
        """Has the group committed every partition up to the last record sent to it?

        (Not from the broker's end offsets: Tansu answers ListOffsets(latest) with the first offset
        of the partition's last record batch plus one, short of the end when that batch holds
        several records; the high watermark in fetch responses is right.)"""
        ends: dict[int, int] = {}
        for record in sent:
            ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
        committed = self.committed(topics.group)
        return all(committed.get(partition, 0) >= end for partition, end in ends.items())

    def stop(self) -> None:
        stop_group(self.process)


@dataclass(frozen=True)
class Topics:
    events: str
    results: str
    dlq: str
    group: str
    partitions: int

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.events, self.results, self.dlq)


# -- producing and reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[str | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
    *,
    request_bytes_max: int = PRODUCE_REQUEST_BYTES_MAX,
    compression: str | None = None,
) -> list[Sent]:
    """Sends (key, value) records, their batches compressed with `compression` (None: not), and waits
    for every acknowledgement; returns where each went."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=request_bytes_max,
        compression_type=compression,
    )
    try:
        pending = []
        for key, value in records:
            raw_key = key.encode() if key is not None else None
            future = producer.send(topic, key=raw_key, value=value, headers=headers or [])
            pending.append((raw_key, value, future))
        producer.flush(30)
        sent = []
        for raw_key, value, future in pending:
            meta = future.get(timeout=30)
            sent.append(Sent(raw_key, value, meta.partition, meta.offset))
        return sent
    finally:
        producer.close(5)


def envelope(
    event_id: str,
    store: str,
    event_type: str,
    lines: list[tuple[str, int]],
    *,
    source: str = "test/kafka",
    **data: Any,
) -> bytes:
    body = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": event_type,
        "time": "2026-11-22T10:15:00+03:00",
        "subject": store,
        "data": {"lines": [{"sku": sku, "qty": qty} for sku, qty in lines], **data},
    }
    return json.dumps(body).encode()


class TopicReader:
    """Reads a topic from its start without joining a group; keeps everything read so far."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.records: list[Any] = []

    def read_until(self, condition: Callable[[list[Any]], bool], deadline_s: float, what: str) -> list[Any]:
        def done() -> bool:
            for batch in self.consumer.poll(timeout_ms=100).values():
                self.records.extend(batch)
            return condition(self.records)

        wait_until(done, deadline_s, what)
        return self.records

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def result_bodies(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in records]


# -- `ledger consume` processes -----------------------------------------------------------------------


def consumer_env(database_url: str, bootstrap: str, topics: Topics, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    env.update(
        LEDGER_DATABASE_URL=database_url,
        LEDGER_KAFKA_BOOTSTRAP=bootstrap,
        LEDGER_KAFKA_TOPIC=topics.events,
        LEDGER_KAFKA_RESULTS_TOPIC=topics.results,
        LEDGER_KAFKA_DLQ_TOPIC=topics.dlq,
        LEDGER_KAFKA_GROUP=topics.group,
        LEDGER_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
        LEDGER_KAFKA_HEARTBEAT_INTERVAL_MS=str(HEARTBEAT_MS),
        LEDGER_KAFKA_RETRY_BACKOFF_MS_MAX="500",
        LEDGER_KAFKA_POLL_TIMEOUT_MS="200",
    )
    env.update(extra)
    return env


class ConsumerProcess:
    """One `ledger consume` (or the crashing wrapper) in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        crashing: bool = False,
        writer_process: bool = False,
    ) -> None:
        """`writer_process`: its writer in a process of its own, as `ledger serve` runs it
        (consume_beside_writer.py), at a socket named for this process alone."""
        self.name = name
        self.metrics_port = free_port()
        self.env = {**env, "LEDGER_KAFKA_METRICS_PORT": str(self.metrics_port)}
        self.writer_socket: str | None = None
        if writer_process:
            self.writer_socket = os.path.join(
                tempfile.gettempdir(), f"ledger-kafka-{uuid.uuid4().hex[:12]}.sock"
            )
            self.env.update(LEDGER_TEST_WRITER_PROCESS="1", LEDGER_WRITER_SOCKET=self.writer_socket)
        self.log_path = log_dir / f"{name}.log"
        if crashing:
            command = [sys.executable, str(CRASHING_CONSUME)]
        elif writer_process:
            command = [sys.executable, str(CONSUME_BESIDE_WRITER)]
        else:
            command = [sys.executable, "-m", "ledger.cli", "consume"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str) -> tuple[int, bytes] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as answer:
                return int(answer.status), bytes(answer.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())
        except OSError:
            return None

    def ready(self) -> bool:
        answer = self._get("/readyz")
        return answer is not None and answer[0] == 200

    def metrics(self) -> dict[str, float]:
        answer = self._get("/metrics")
        if answer is None:
            return {}
        found = {}
        for line in answer[1].decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                found[name] = float(value)
        return found

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def wait_ready(self, deadline_s: float = 60) -> None:
        def ready_or_dead() -> bool:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log[-3000:]}"
            return self.ready()

        wait_until(ready_or_dead, deadline_s, f"{self.name} to join its group")

    def wait_exit(self, deadline_s: float = 60) -> int:
        try:
            return self.process.wait(deadline_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit in {deadline_s} s:\n{self.log[-3000:]}") from None

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def stop(self) -> None:
        """Stops its process group; then removes its writer's socket and the lock file beside it,
        which a kill -9 leaves behind (their path is this process's alone)."""
        stop_group(self.process)
        if self.writer_socket is not None:
            for path in (self.writer_socket, lock_path(self.writer_socket)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


# (env, *, crashing=False, name="consumer", writer_process=False)
ConsumerFactory = Callable[..., ConsumerProcess]


# -- what the ledger holds, and what it should hold -------------------------------------------------------

Levels = dict[tuple[str, str], tuple[int, int, int]]


def events_in_order(sent: Iterable[Sent]) -> list[StockEvent]:
    """The valid events as a consumer meets them: partition by partition, in offset order."""
    limits = intake_limits(Settings())
    ordered = sorted(sent, key=lambda record: (record.partition, record.offset))
    events = [read_value(record.value, limits) for record in ordered]
    return [event for event in events if isinstance(event, StockEvent)]


def reference_ledger(events: list[StockEvent], directory: Path) -> tuple[str, dict[tuple[str, str], str]]:
    """Records `events` in a fresh SQLite ledger; returns its URL and each event's first outcome."""
    url = f"sqlite:///{directory / 'reference.db'}"
    ledger = build_ledger(Settings(database_url=url))
    ledger.start()
    outcomes: dict[tuple[str, str], str] = {}
    try:
        for start in range(0, len(events), 500):
            for result in ledger.submit_and_wait(events[start : start + 500]):
                outcomes.setdefault((result.source, result.event_id), result.outcome.value)
    finally:
        ledger.stop()
    return url, outcomes


def snapshot(database_url: str, events: list[StockEvent]) -> tuple[Levels, Counter[tuple[str, str]]]:
    """Every level the events touch, and how many times each producer event was recorded."""
    keys: dict[str, set[str]] = {}
    for event in events:
        for store in filter(None, (event.store_id, event.to_store)):
            keys.setdefault(store, set()).update(line.sku for line in event.lines)
    ledger = build_ledger(Settings(database_url=database_url))
    ledger.start()
    levels: Levels = {}
    recorded: Counter[tuple[str, str]] = Counter()
    producer_types = {event_type.value for event_type in PRODUCER_EVENT_TYPES}
    try:
        for store, skus in sorted(keys.items()):
            for view in ledger.levels(store, sorted(skus)):
                level = view.level
                levels[(store, view.sku)] = (level.on_hand_units, level.reserved_units, level.incoming_units)
            positions: set[tuple[str, str, int]] = set()
            cursor = HistoryFilter(store_id=store)
            while True:
                page = ledger.history(cursor, HISTORY_PAGE)
                for row in page[:HISTORY_PAGE]:
                    if row["type"] in producer_types:
                        positions.add((row["source"], row["event_id"], int(row["position"])))
                if len(page) <= HISTORY_PAGE:
                    break
                last = page[HISTORY_PAGE - 1]
                cursor = HistoryFilter(
                    store_id=store, after_position=int(last["position"]), after_line_no=int(last["line_no"])
                )
            recorded.update((source, event_id) for source, event_id, _ in positions)
    finally:
        ledger.stop()
    return levels, recorded


def effective_outcomes(results: Iterable[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """Per event, the first outcome each of its results reports (a duplicate's is its original's)."""
    found: dict[tuple[str, str], set[str]] = {}
    for body in results:
        outcome = body["original"]["outcome"] if body["outcome"] == "duplicate" else body["outcome"]
        found.setdefault((body["source"], body["id"]), set()).add(outcome)
    return found
