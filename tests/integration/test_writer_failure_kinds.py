"""The writer answers the two kinds of failure as themselves, in a thread of this process and in
a process of its own: an event it cannot store (a bug) fails its submission with SubmissionFailed,
a database that is unavailable with WriterUnavailable; nothing of a failed submission is
recorded, and the writer goes on recording the others. On both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import events as ev
from support import poison

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import Outcome, StockEvent
from ledger.results import EventResult
from ledger.service import DatabaseUnavailable
from ledger.state_cache import StateCache
from ledger.writer.remote import RemoteWriter
from ledger.writer.submission import SubmissionFailed, WriterUnavailable

ANSWER_DEADLINE_S = 20.0
STORE = "store-1"

Submit = Callable[[list[StockEvent]], list[EventResult]]


def _receipt(event_id: str) -> StockEvent:
    return ev.stock_event(event_id, "stock.receipt", STORE, [("SKU-1", 1)])


def _cache() -> StateCache:
    return StateCache(levels_max=1000, reservations_max=1000, catch_up_events_max=100_000)


@pytest.fixture(params=["thread", "process"])
def submit(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Submit, Any]]:
    """A poisoned writer's submit_and_wait, and its async submit (or None for the thread's)."""
    if request.param == "thread":
        poison.install(monkeypatch.setattr)
        ledger = build_ledger(Settings(database_url=database_url))
        ledger.start()
        try:
            yield ledger.writer.submit_and_wait, ledger.writer
        finally:
            ledger.stop()
        return
    with poison.poisoned_writer_process(database_url, tmp_path, monkeypatch) as path:
        remote = RemoteWriter(path, _cache(), timeout_s=ANSWER_DEADLINE_S)
        try:
            yield remote.submit_and_wait, remote
        finally:
            remote.stop()


def test_an_event_the_writer_cannot_store_fails_its_submission_as_refused_and_nothing_of_it_is_recorded(
    submit: tuple[Submit, Any],
) -> None:
    submit_and_wait, port = submit
    with pytest.raises(SubmissionFailed, match="cannot store event poison-1"):
        submit_and_wait([_receipt("good-1"), _receipt("poison-1"), _receipt("good-2")])
    with pytest.raises(SubmissionFailed):
        asyncio.run(port.submit([_receipt("poison-2")]))
    # Nothing of the refused submission was recorded: its good events are new when sent again.
    results = submit_and_wait([_receipt("good-1"), _receipt("good-2")])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED]


def test_a_database_that_is_unavailable_fails_the_submission_as_unavailable(
    submit: tuple[Submit, Any],
) -> None:
    submit_and_wait, port = submit
    with pytest.raises(WriterUnavailable, match="database is locked"):
        submit_and_wait([_receipt("locked-1")])
    with pytest.raises(WriterUnavailable):
        asyncio.run(port.submit([_receipt("locked-2")]))
    [result] = submit_and_wait([_receipt("good-3")])
    assert result.outcome is Outcome.ACCEPTED


def test_the_service_keeps_an_unavailable_database_apart_from_a_refused_submission(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison.install(monkeypatch.setattr)
    ledger = build_ledger(Settings(database_url=database_url))
    ledger.start()
    try:
        ledger.submit_and_wait([_receipt("good-1")])
        with pytest.raises(SubmissionFailed):
            ledger.submit_and_wait([_receipt("poison-1")])
        assert ledger.write_failure is None  # a refusal says nothing of whether writes can be recorded
        with pytest.raises(DatabaseUnavailable):
            ledger.submit_and_wait([_receipt("locked-1")])
        assert ledger.write_failure is not None
    finally:
        ledger.stop()
