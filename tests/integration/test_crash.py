"""kill -9 of the service, or of its writer process alone, while events stream in: every acknowledged
event is in the ledger exactly once."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
from support import api, db
from support import events as ev
from support.ids import unique

from ledger.writer.socket_path import lock_path

pytestmark = pytest.mark.slow

STREAMS = 4
ACKNOWLEDGED_BEFORE_KILL = 150
STREAM_DEADLINE_S = 60.0
SKUS = ("SKU-1", "SKU-2", "SKU-3")
RESEND_BATCH = 500
EVENTS_PER_REQUEST = 3  # the writer-process kill: arrays, so that batches carry several requests' events
ACKNOWLEDGED_AFTER_RESTART = 60


class Stream(threading.Thread):
    """Sends receipts with unique ids one by one until the server stops answering."""

    def __init__(self, url: str, store: str, number: int) -> None:
        super().__init__(daemon=True)
        self.url, self.store, self.number = url, store, number
        self.sent: list[dict[str, Any]] = []
        self.acknowledged: dict[str, int] = {}  # event id -> position
        self.failure: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + STREAM_DEADLINE_S
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            for i in range(100_000):
                if time.monotonic() > deadline:
                    return
                event = ev.receipt(
                    self.store,
                    (SKUS[i % len(SKUS)], 1 + (i + self.number) % 7),
                    event_id=f"s{self.number}-{i}",
                )
                self.sent.append(event)
                try:
                    response = client.post("/v1/events", json=event)
                except httpx.TransportError:
                    return  # the server is gone: this last one may or may not be recorded
                if response.status_code != 200:
                    return  # e.g. 503 while shutting down: the outcome is not known
                [result] = response.json()["results"]
                if result["outcome"] != "accepted":
                    self.failure = f"unexpected answer {result}"
                    return
                self.acknowledged[event["id"]] = result["position"]


def _acknowledged(streams: list[Stream]) -> int:
    return sum(len(s.acknowledged) for s in streams)


def _sent_again(
    server: Any, store: str, streams: list[Any]
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any], list[dict[str, Any]]]:
    """Sends every stream's events again: each acknowledged one must answer as a duplicate of its
    accepted original, at its position; one whose answer was lost (the server or its writer died)
    was recorded before or is now, either way once. Returns what was sent, what was acknowledged,
    the SKUs' levels once they include every event, and the store's history."""
    sent = [event for stream in streams for event in stream.sent]
    acknowledged = {k: v for stream in streams for k, v in stream.acknowledged.items()}
    with server.client() as client:
        answers = []
        for start in range(0, len(sent), RESEND_BATCH):
            answers += api.post_events(client, *sent[start : start + RESEND_BATCH])
        for event, answer in zip(sent, answers, strict=True):
            if event["id"] in acknowledged:
                assert answer["outcome"] == "duplicate", (event["id"], answer)
                assert answer["original"] == {
                    "outcome": "accepted",
                    "reason": None,
                    "position": acknowledged[event["id"]],
                }, (event["id"], answer)
            else:
                assert answer["outcome"] in ("accepted", "duplicate"), answer
        head = max(a.get("position") or a["original"]["position"] for a in answers)
        levels = {sku: api.level(client, store, sku, min_position=head) for sku in SKUS}
        history = api.history(client, store)
    return sent, acknowledged, levels, history


def _on_hand_sent(sent: list[dict[str, Any]]) -> dict[str, int]:
    """Each SKU's units in the receipts sent."""
    expected: dict[str, int] = defaultdict(int)
    for event in sent:
        for line in event["data"]["lines"]:
            expected[line["sku"]] += line["qty"]
    return expected


def test_every_acknowledged_event_survives_a_kill_9_exactly_once(database_url, serve):
    server = serve(database_url)
    store = unique("store")
    streams = [Stream(server.url, store, n) for n in range(STREAMS)]
    for stream in streams:
        stream.start()
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while _acknowledged(streams) < ACKNOWLEDGED_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _acknowledged(streams) >= ACKNOWLEDGED_BEFORE_KILL, "the streams did not get going"
    server.kill()
    for stream in streams:
        stream.join(STREAM_DEADLINE_S)
        assert not stream.is_alive()
        assert stream.failure is None, stream.failure

    server.start()
    sent, acknowledged, levels, history = _sent_again(server, store, streams)
    expected = _on_hand_sent(sent)
    assert db.event_count(database_url) == len(sent)
    keys = db.query(database_url, "SELECT event_id, position FROM ledger_event_keys")
    assert len(keys) == len(sent)
    assert {
        row["event_id"]: row["position"] for row in keys if row["event_id"] in acknowledged
    } == acknowledged
    assert len(history) == len(sent)
    for sku in SKUS:
        entries = [e for e in history if e["sku"] == sku]
        assert sum(e["on_hand_delta"] for e in entries) == expected[sku]
        assert entries[-1]["on_hand"] == expected[sku]
        assert db.level_rows(database_url, store)[sku]["on_hand"] == expected[sku]
        assert api.levels_tuple(levels[sku]) == (expected[sku], 0, expected[sku], 0)


class StreamThrough(threading.Thread):
    """Sends arrays of receipts with unique ids until stopped, going on through 503 answers (the
    writer is away: those events' outcomes are not known until they are sent again)."""

    def __init__(self, url: str, store: str, number: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.store, self.number, self.stop = url, store, number, stop
        self.sent: list[dict[str, Any]] = []
        self.acknowledged: dict[str, int] = {}  # event id -> position
        self.failure: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + STREAM_DEADLINE_S
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            for i in range(100_000):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                events = [
                    ev.receipt(
                        self.store,
                        (SKUS[(i + j) % len(SKUS)], 1 + (i + self.number) % 7),
                        event_id=f"w{self.number}-{i}-{j}",
                    )
                    for j in range(EVENTS_PER_REQUEST)
                ]
                self.sent += events
                try:
                    response = client.post("/v1/events", json=events)
                except httpx.TransportError as error:
                    self.failure = f"the HTTP worker is not the one killed: {error!r}"
                    return
                if response.status_code == 503:
                    time.sleep(0.05)
                    continue
                if response.status_code != 200:
                    self.failure = f"unexpected answer {response.status_code} {response.text}"
                    return
                for event, result in zip(events, response.json()["results"], strict=True):
                    if result["outcome"] != "accepted":
                        self.failure = f"unexpected answer {result}"
                        return
                    self.acknowledged[event["id"]] = result["position"]


def _writer_process(server: Any, socket_path: str) -> psutil.Process:
    """The service's process that listens on the writer's socket."""
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if any(conn.laddr == socket_path for conn in child.net_connections(kind="unix")):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process of the service listens on {socket_path}")


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def serve_at_a_socket_of_its_own(serve) -> Iterator[tuple[Callable[[str], Any], str]]:
    """`serve(database_url)` with LEDGER_WRITER_SOCKET named, in the temporary directory (a test's
    tmp_path is too long for a socket's address), and that path. Its services are stopped first,
    then the socket and the lock file beside it are removed: a service keeps the lock file of a
    path it was given, and one that stops after its lock file is removed makes it again."""
    socket_path = os.path.join(tempfile.gettempdir(), f"ledger-crash-{uuid.uuid4().hex[:12]}.sock")
    started: list[Any] = []

    def start(database_url: str) -> Any:
        started.append(serve(database_url, {"LEDGER_WRITER_SOCKET": socket_path}))
        return started[-1]

    yield start, socket_path
    for server in started:
        server.stop()
    for path in (socket_path, lock_path(socket_path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_every_acknowledged_event_survives_a_kill_9_of_the_writer_process_alone(
    database_url, serve_at_a_socket_of_its_own
):
    """The HTTP worker stays; the writer process dies with batches on their way (on PostgreSQL, one
    may be in flight while the next is decided; on SQLite each is recorded before the next is
    taken) and its supervisor starts another, which the worker reconnects to. What was acknowledged
    stays, once; what was answered 503 is recorded at most once, and sending it again says so."""
    start, socket_path = serve_at_a_socket_of_its_own
    server = start(database_url)
    store = unique("store")
    stop = threading.Event()
    streams = [StreamThrough(server.url, store, n, stop) for n in range(STREAMS)]
    for stream in streams:
        stream.start()
    try:
        _wait_for(lambda: _acknowledged(streams) >= ACKNOWLEDGED_BEFORE_KILL, "the streams did not get going")
        writer = _writer_process(server, socket_path)
        writer.kill()
        writer.wait(STREAM_DEADLINE_S)
        at_kill = _acknowledged(streams)
        _wait_for(
            lambda: (
                _acknowledged(streams) >= at_kill + ACKNOWLEDGED_AFTER_RESTART
                or any(s.failure for s in streams)
            ),
            "no write was acknowledged after the writer process was started again",
        )
    finally:
        stop.set()
        for stream in streams:
            stream.join(STREAM_DEADLINE_S)
    for stream in streams:
        assert not stream.is_alive()
        assert stream.failure is None, stream.failure
    assert _writer_process(server, socket_path).pid != writer.pid

    sent, _, levels, history = _sent_again(server, store, streams)
    expected = _on_hand_sent(sent)
    assert db.event_count(database_url) == len(sent)
    assert len(history) == len(sent)
    assert sorted(entry["event_id"] for entry in history) == sorted(event["id"] for event in sent)
    for sku in SKUS:
        assert db.level_rows(database_url, store)[sku]["on_hand"] == expected[sku]
        assert api.levels_tuple(levels[sku]) == (expected[sku], 0, expected[sku], 0)
