"""Readiness asks the writer with an empty batch. A full disk lets an empty transaction through, so
after a batch that recorded something failed, the probe fails too until a batch commits again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import events as ev

from ledger.bootstrap import build_writer
from ledger.config import Settings
from ledger.results import EventResult
from ledger.writer import facade
from ledger.writer.facade import Writer
from ledger.writer.submission import Submission, WriterUnavailable


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


def test_a_probe_fails_while_the_last_batch_failed_and_passes_once_one_commits(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(_process(writer, []), list)  # healthy: the probe passes

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(facade, "insert", disk_full)
        patched.setattr(writer, "decide_from_memory", lambda *_, **__: None)
        assert isinstance(_process(writer, [_receipt("r1")]), OSError)
    # The disk is writable again for the probe's empty transaction, but nothing has committed.
    probe = _process(writer, [])
    assert isinstance(probe, WriterUnavailable)
    assert "No space left on device" in str(probe)
    assert isinstance(_process(writer, [_receipt("r2")]), list)
    assert isinstance(_process(writer, []), list)


def test_a_probe_asks_the_database_again_once_the_hold_is_over(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(facade, "insert", lambda *_: (_ for _ in ()).throw(OSError(28, "full")))
        patched.setattr(writer, "decide_from_memory", lambda *_, **__: None)
        assert isinstance(_process(writer, [_receipt("r1")]), OSError)
    writer.failed_at -= facade.FAILURE_HOLD_S  # as if the hold had passed with no write since
    assert isinstance(_process(writer, []), list)
