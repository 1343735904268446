"""The writer process and its clients: a client that stops reading never freezes the writer, the
blocking client reads only its own answers, a writer that cannot start says so at once, and
sockets left by killed services are cleaned up, but not one a live writer listens at. On both
databases."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from support import db
from support import events as ev
from support.writer_processes import writer_process

from ledger.bootstrap import build_ledger, build_writer_from_environment
from ledger.config import Settings
from ledger.domain.model import Outcome
from ledger.state_cache import StateCache
from ledger.storage.database_urls import database_identity
from ledger.writer.process import (
    WriterStartFailed,
    remove_stale_sockets,
    start_writer_process,
    stop_writer_process,
)
from ledger.writer.remote import RemoteWriter
from ledger.writer.socket_path import SocketPathTaken, listen_unix
from ledger.writer.submission import WrongDatabase
from ledger.writer.wire import Committed, Subscribe, encode

OUTBOX_BYTES_MAX = 64 * 1024  # small, so that a client that never reads is over it quickly
BATCHES = 120
EVENTS_PER_BATCH = 50
ANSWER_DEADLINE_S = 20.0
HEARD_ATTEMPTS = 5


def _cache() -> StateCache:
    return StateCache(levels_max=100_000, reservations_max=1000, catch_up_events_max=100_000)


@pytest.fixture
def writer_socket(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A writer process on the test's database (it reads its settings from the environment)."""
    with writer_process(
        build_writer_from_environment, database_url, tmp_path, monkeypatch, OUTBOX_BYTES_MAX
    ) as path:
        yield path


def _receipts(batch: int) -> list[Any]:
    return [
        ev.stock_event(f"b{batch}-{i}", "stock.receipt", f"store-{i % 5}", [(f"SKU-{batch}-{i}", 1)])
        for i in range(EVENTS_PER_BATCH)
    ]


def test_a_client_that_never_reads_is_disconnected_and_the_writer_goes_on(writer_socket: str) -> None:
    sleeper = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sleeper.connect(writer_socket)
    sleeper.sendall(encode(Subscribe()))  # every commit is broadcast to it; it never reads one
    writer = RemoteWriter(writer_socket, _cache(), timeout_s=ANSWER_DEADLINE_S)
    try:
        for batch in range(BATCHES):
            results = writer.submit_and_wait(_receipts(batch))
            assert [r.outcome for r in results] == [Outcome.ACCEPTED] * EVENTS_PER_BATCH, batch
        # The writer gave up on the sleeper: its side of the connection was closed.
        sleeper.settimeout(ANSWER_DEADLINE_S)
        received = 0
        while chunk := sleeper.recv(1 << 20):
            received += len(chunk)
        assert received < OUTBOX_BYTES_MAX + (1 << 20)
    finally:
        sleeper.close()
        writer.stop()


def test_the_blocking_client_is_not_sent_broadcasts_meant_for_caches(writer_socket: str) -> None:
    """An async subscriber's traffic (commits, announcements) never reaches a blocking client,
    which would otherwise misread it or leave it unread between calls."""
    subscriber = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    subscriber.connect(writer_socket)
    subscriber.sendall(encode(Subscribe()))
    blocking = RemoteWriter(writer_socket, _cache(), timeout_s=ANSWER_DEADLINE_S)
    try:
        for batch in range(5):
            results = blocking.submit_and_wait(_receipts(batch))
            assert all(r.outcome is Outcome.ACCEPTED for r in results)
        subscriber.settimeout(ANSWER_DEADLINE_S)
        assert subscriber.recv(1 << 16)  # the subscriber did get the commits
    finally:
        subscriber.close()
        blocking.stop()


def test_a_writer_that_cannot_open_its_database_fails_the_start_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(WriterStartFailed, match="could not start"):
        start_writer_process(build_writer_from_environment, str(tmp_path / "w.sock"), OUTBOX_BYTES_MAX)


def test_a_second_writer_given_a_live_writers_socket_refuses_to_start_and_the_first_goes_on(
    writer_socket: str,
) -> None:
    """Two services given one LEDGER_WRITER_SOCKET: the second's writer must not take the path over,
    or the first service's workers would reconnect to a writer that is not theirs."""
    with pytest.raises(WriterStartFailed, match="another writer listens at"):
        start_writer_process(build_writer_from_environment, writer_socket, OUTBOX_BYTES_MAX)
    writer = RemoteWriter(writer_socket, _cache(), timeout_s=ANSWER_DEADLINE_S)
    try:
        results = writer.submit_and_wait(_receipts(0))
        assert [r.outcome for r in results] == [Outcome.ACCEPTED] * EVENTS_PER_BATCH
    finally:
        writer.stop()


def test_a_socket_left_by_a_writer_that_is_gone_is_taken(tmp_path: Path) -> None:
    path = str(tmp_path / "w.sock")
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(path)  # bound and closed without its file removed, as after kill -9
    gone.close()
    listener = listen_unix(path)  # and it takes connections
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(path)
        probe.close()
    finally:
        listener.close()


def test_a_writer_socket_path_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("an operator's file")
    with pytest.raises(SocketPathTaken, match="is not a socket"):
        listen_unix(str(path))
    assert path.read_text() == "an operator's file"


def test_sockets_of_services_that_no_longer_run_are_removed(tmp_path: Path) -> None:
    gone = tmp_path / "ledger-writer-999999999.sock"
    alive = tmp_path / f"ledger-writer-{os.getpid()}.sock"
    other = tmp_path / "something-else.sock"
    for path in (gone, alive, other):
        path.touch()
    assert remove_stale_sockets(str(tmp_path)) == [gone.name]
    assert not gone.exists() and alive.exists() and other.exists()
    assert tempfile.gettempdir()  # the default directory is the one ledger serve uses


def test_a_client_that_sends_what_the_writer_cannot_read_is_dropped_and_the_writer_goes_on(
    writer_socket: str,
) -> None:
    confused = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    confused.connect(writer_socket)
    confused.sendall(encode(Committed(1, 1, [], [])))  # a message only the writer sends
    confused.settimeout(ANSWER_DEADLINE_S)
    try:
        assert confused.recv(1024) == b""  # the writer closed this connection, and only this one
    finally:
        confused.close()
    writer = RemoteWriter(writer_socket, _cache(), timeout_s=ANSWER_DEADLINE_S)
    try:
        results = writer.submit_and_wait(_receipts(0))
        assert all(r.outcome is Outcome.ACCEPTED for r in results)
    finally:
        writer.stop()


def test_a_process_that_never_writes_over_http_hears_of_every_commit(writer_socket: str) -> None:
    """A worker whose only writer is the Kafka intake (a blocking client, which does not subscribe)
    still hears of each commit, or its refresher would read every batch back from the database."""
    cache = _cache()
    listening = RemoteWriter(writer_socket, cache, timeout_s=ANSWER_DEADLINE_S)
    blocking = RemoteWriter(writer_socket, _cache(), timeout_s=ANSWER_DEADLINE_S)

    async def listen_while_another_writes() -> tuple[int, int]:
        await listening.subscribe()
        # The subscription reaches the writer on its own socket, so the first commits may pass
        # before it: a later batch is heard for sure.
        for batch in range(HEARD_ATTEMPTS):
            results = await asyncio.to_thread(blocking.submit_and_wait, _receipts(batch))
            last = max(r.position or 0 for r in results)
            deadline = time.monotonic() + 1.0
            while cache.head < last and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if cache.head >= last:
                break
        return cache.head, last

    try:
        head, last = asyncio.run(listen_while_another_writes())
        assert head >= last and listening.commits_seen >= 1
    finally:
        listening.stop()
        blocking.stop()


def _another_database(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path=parts.path.rsplit("/", 1)[0] + "/another_ledger"))


def test_a_client_of_another_database_sends_nothing_to_the_writer(
    writer_socket: str, database_url: str
) -> None:
    """Two ledgers given one LEDGER_WRITER_SOCKET: a client (an HTTP worker, the Kafka intake, an
    import) configured for another database than the writer's refuses it before sending anything,
    blocking or async, and a client of the writer's own database, named another way, goes on."""
    other = RemoteWriter(
        writer_socket,
        _cache(),
        ANSWER_DEADLINE_S,
        database=database_identity(_another_database(database_url)),
    )

    async def submit_async() -> None:
        await other.submit(_receipts(0))

    try:
        with pytest.raises(WrongDatabase, match="another_ledger"):
            other.submit_and_wait(_receipts(0))
        with pytest.raises(WrongDatabase, match="another_ledger"):
            asyncio.run(submit_async())
    finally:
        other.stop()
    assert db.scalar(database_url, "SELECT COUNT(*) AS n FROM ledger_event_keys") == 0
    spelt_otherwise = database_url.replace("sqlite:////", "sqlite:////./").replace(
        "postgres://", "postgresql://"
    )
    own = RemoteWriter(
        writer_socket, _cache(), ANSWER_DEADLINE_S, database=database_identity(spelt_otherwise)
    )
    try:
        assert all(r.outcome is Outcome.ACCEPTED for r in own.submit_and_wait(_receipts(1)))
    finally:
        own.stop()


def test_a_serving_process_of_another_ledger_sends_nothing_to_the_writer(
    writer_socket: str, database_url: str, tmp_path: Path
) -> None:
    """The wiring of the HTTP workers, the Kafka intake and the adapters (build_ledger): given the
    socket of a writer on another database, their writes are refused, not recorded there."""
    other = Settings(database_url=f"sqlite:///{tmp_path / 'other.db'}", writer_socket=writer_socket)
    ledger = build_ledger(other)
    try:
        with pytest.raises(WrongDatabase, match=r"other\.db"):
            ledger.writer.submit_and_wait(_receipts(0))
    finally:
        ledger.writer.stop()
        ledger.recorder.close()
    assert db.scalar(database_url, "SELECT COUNT(*) AS n FROM ledger_event_keys") == 0


IDLE_POLL_MS = 60_000  # the writer's idle wait: far longer than a stop may take
STOP_WITHIN_S = 10.0


def test_an_idle_writer_stops_when_asked_without_waiting_out_its_poll(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop signal wakes the writer's wait for requests, which otherwise lasts the expiry
    interval (a SIGTERM of `ledger serve` took that long more)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_EXPIRY_INTERVAL_MS", str(IDLE_POLL_MS))
    process = start_writer_process(build_writer_from_environment, str(tmp_path / "w.sock"), OUTBOX_BYTES_MAX)
    time.sleep(0.5)  # into its idle wait
    stop_writer_process(process, STOP_WITHIN_S)
    assert process.exitcode == 0, process.exitcode  # it stopped by itself: not killed at the deadline
