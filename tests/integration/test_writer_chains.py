"""A request sent after another is recorded only if that one was (writer/chains.py): in a thread
of this process and in the writer process, on both databases. A client can so keep two requests
in the writer and still have them recorded in the order it sent them, whatever fails."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import events as ev
from support import poison

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Outcome, StockEvent
from ledger.service import Ledger
from ledger.writer.remote import RemoteWriter
from ledger.writer.submission import NotTried, SubmissionFailed
from ledger.writer.wire import WriteRequest, encode

ANSWER_DEADLINE_S = 20.0
STORE = "store-1"


def _receipt(event_id: str) -> StockEvent:
    return ev.stock_event(event_id, "stock.receipt", STORE, [("SKU-1", 1)])


@contextlib.contextmanager
def _poisoned_ledger(
    kind: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ledger]:
    """A ledger whose writer refuses events named poison-*: a thread of it, or a process of its own."""
    poison.install(monkeypatch.setattr)
    if kind == "thread":
        ledger = build_ledger(Settings(database_url=database_url))
        ledger.start()
        try:
            yield ledger
        finally:
            ledger.stop()
        return
    with poison.poisoned_writer_process(database_url, tmp_path, monkeypatch) as path:
        ledger = build_ledger(Settings(database_url=database_url, writer_socket=path))
        ledger.start()
        try:
            yield ledger
        finally:
            ledger.stop()


@pytest.fixture(params=["thread", "process"])
def ledger(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ledger]:
    with _poisoned_ledger(request.param, database_url, tmp_path, monkeypatch) as ledger:
        yield ledger


@pytest.fixture
def process_ledger(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    with _poisoned_ledger("process", database_url, tmp_path, monkeypatch) as ledger:
        yield ledger


def test_a_request_after_a_refused_one_is_not_tried_and_its_events_stay_new(
    ledger: Ledger,
) -> None:
    refused = ledger.send([_receipt("good-1"), _receipt("poison-1")])
    follower = ledger.send([_receipt("good-2")], after=refused)
    with pytest.raises(SubmissionFailed, match="poison-1"):
        refused.wait()
    with pytest.raises(NotTried):
        follower.wait()
    assert ledger.write_failure is None  # neither says anything of whether writes can be recorded
    results = ledger.submit_and_wait([_receipt("good-1"), _receipt("good-2")])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED]


def test_requests_after_recorded_ones_are_recorded_in_the_order_sent(
    ledger: Ledger,
) -> None:
    first = ledger.send([_receipt("a-1"), _receipt("a-2")])
    second = ledger.send([_receipt("b-1")], after=first)
    third = ledger.send([_receipt("c-1")], after=second)
    positions = [result.position for sent in (first, second, third) for result in sent.wait()]
    assert all(position is not None for position in positions)
    assert positions == sorted(positions) and len(set(positions)) == 4


def test_a_request_after_one_sent_on_a_connection_since_lost_is_not_tried(process_ledger: Ledger) -> None:
    ledger = process_ledger
    remote = ledger.writer
    assert isinstance(remote, RemoteWriter)
    sent = ledger.send([_receipt("a-1")])
    sent.wait()
    remote._sync_lost()  # as after a timeout: the writer may still answer on the old connection
    follower = ledger.send([_receipt("b-1")], after=sent)
    with pytest.raises(NotTried):
        follower.wait()
    [result] = ledger.submit_and_wait([_receipt("b-1")])
    assert result.outcome is Outcome.ACCEPTED


def test_a_large_request_sent_after_a_short_poll_is_sent_whole(process_ledger: Ledger) -> None:
    """A poll waits a few milliseconds on the connection; the send after it must not inherit that
    wait, or a large batch (the Kafka intake's 2,000 events) times out half sent while the writer
    records the one before it (and reads nothing meanwhile)."""
    ledger = process_ledger

    def receipts(prefix: str) -> list[StockEvent]:
        return [
            ev.stock_event(f"{prefix}-{n}", "stock.receipt", STORE, [(f"SKU-{n}", 1)]) for n in range(5000)
        ]

    first = ledger.send(receipts("a"))
    assert first.poll(0.001) is None, "the writer answered 5,000 events within a millisecond"
    second = ledger.send(receipts("b"), after=first)
    assert [r.outcome for r in first.wait()] == [Outcome.ACCEPTED] * 5000
    assert [r.outcome for r in second.wait()] == [Outcome.ACCEPTED] * 5000


def test_a_kafka_batch_fits_in_the_blocking_connections_send_buffer(process_ledger: Ledger) -> None:
    """A batch the writer reads in two turns of its loop is read only after the batch in flight
    has committed, so it cannot be decided meanwhile: a poll's batch (2,000 events) must be in
    the kernel's buffer whole when sent, whatever the host's default buffer (208 KiB)."""
    remote = process_ledger.writer
    assert isinstance(remote, RemoteWriter)
    events = [
        ev.stock_event(f"pos-{n:09d}", "stock.pos_sale", STORE, [(f"SKU-{n:05d}", 1), (f"SKU-{n:05d}-b", 2)])
        for n in range(2000)
    ]
    frame = encode(WriteRequest(1, events, None, None, after=0))
    sent = remote.send(events[:1])
    assert sent.wait()
    sock = remote._sync_sock
    assert sock is not None
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= len(frame)
