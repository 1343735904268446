"""Readiness asks the writer with an empty batch. A full disk lets an empty transaction through, so
after a batch that recorded something failed, the probe fails too until a batch commits again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_writer
from ledger.config import Settings
from ledger.results import EventResult
from ledger.writer import facade, in_flight
from ledger.writer.facade import Writer
from ledger.writer.submission import Submission, WriterUnavailable

PROBE_DEADLINE_S = 10.0


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    built = build_writer(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", writer_retries_max=0))
    try:
        yield built
    finally:
        built.recorder.close()


def _process(writer: Writer, events: list[object]) -> list[EventResult] | BaseException:
    answers: list[list[EventResult] | BaseException] = []
    writer.process([Submission(list(events), answers.append)])  # type: ignore[arg-type]
    [answer] = answers
    return answer


def _receipt(event_id: str) -> object:
    return ev.stock_event(event_id, "stock.receipt", "store-1", [("SKU-1", 1)])


def test_a_probe_fails_while_the_last_batch_failed_even_if_another_commits(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(_process(writer, []), list)  # healthy: the probe passes

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(facade, "insert", disk_full)
        patched.setattr(writer, "decide_from_memory", lambda *_, **__: None)
        failed = _process(writer, [_receipt("r1")])
        # A full disk is the database being unavailable: re-send later (not "refused").
        assert isinstance(failed, WriterUnavailable) and isinstance(failed.__cause__, OSError)
    # The disk takes the probe's empty transaction, and even a small batch (a page was free):
    # the hold stands, since the next batch may need a page more.
    probe = _process(writer, [])
    assert isinstance(probe, WriterUnavailable)
    assert "No space left on device" in str(probe)
    assert isinstance(_process(writer, [_receipt("r2")]), list)
    assert isinstance(_process(writer, []), WriterUnavailable)
    writer.failed_at -= facade.FAILURE_HOLD_S  # as if the hold had passed with no failure since
    assert isinstance(_process(writer, []), list)


def test_a_probe_queued_with_a_write_that_fails_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that queued up behind a write shares its batch. When the batch fails and its
    submissions are then tried one by one, the probe alone must not ask the database: a full disk
    grants an empty transaction (seen in CI: /readyz said 200 in the middle of a full disk)."""
    built = build_writer(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", writer_retries_max=1))
    try:
        monkeypatch.setattr(facade, "insert", lambda *_: (_ for _ in ()).throw(OSError(28, "full")))
        monkeypatch.setattr(built, "decide_from_memory", lambda *_, **__: None)
        answers: dict[str, list[EventResult] | BaseException] = {}
        built.process(
            [
                Submission([_receipt("r1")], lambda answer: answers.__setitem__("write", answer)),  # type: ignore[list-item]
                Submission([], lambda answer: answers.__setitem__("probe", answer)),
            ]
        )
        assert isinstance(answers["write"], WriterUnavailable)
        assert isinstance(answers["probe"], WriterUnavailable), answers["probe"]
        assert "the last batch failed" in str(answers["probe"])
    finally:
        built.recorder.close()


def test_probes_during_the_hold_do_not_prolong_it(writer: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readiness probes keep coming while the hold lasts; they must not start it again, or an
    instance nobody sends writes to would never become ready."""
    monkeypatch.setattr(facade, "FAILURE_HOLD_S", 0.5)
    with monkeypatch.context() as patched:
        patched.setattr(facade, "insert", lambda *_: (_ for _ in ()).throw(OSError(28, "full")))
        patched.setattr(writer, "decide_from_memory", lambda *_, **__: None)
        failed = _process(writer, [_receipt("r1")])
        assert isinstance(failed, WriterUnavailable) and isinstance(failed.__cause__, OSError)
    deadline = time.monotonic() + PROBE_DEADLINE_S
    refused = 0
    while isinstance(probe := _process(writer, []), WriterUnavailable):
        assert time.monotonic() < deadline, "probes are still refused long after the hold"
        assert probe.args[0].count("the last batch failed") == 1  # the cause, not nested
        refused += 1
        time.sleep(0.05)
    assert refused > 0 and isinstance(probe, list)


def test_a_batch_landed_from_flight_counts_as_committed_and_leaves_the_hold(
    postgres: EmbeddedPostgres,
) -> None:
    """On PostgreSQL the writer process records most batches in flight (one statement): such a
    commit is counted like an ordinary one, and the hold stands as it does after one."""
    built = build_writer(Settings(database_url=postgres.create_database("readiness"), writer_optimistic=True))
    try:
        assert isinstance(_process(built, [_receipt("r1")]), list)  # memory now holds store and SKU
        built.failed([Submission([_receipt("lost")], lambda _: None)], OSError(28, "full"))
        committed_before = built.batches_committed
        answers: list[list[EventResult] | BaseException] = []
        flight = in_flight.begin(built, [Submission([_receipt("r2")], answers.append)])
        assert flight is not None, "recorded the ordinary way: this test needs the one in flight"
        assert in_flight.land(built, flight)
        assert isinstance(answers[0], list)
        assert built.batches_committed == committed_before + 1
        assert isinstance(_process(built, []), WriterUnavailable)
        built.failed_at -= facade.FAILURE_HOLD_S
        assert isinstance(_process(built, []), list)
    finally:
        built.recorder.close()
