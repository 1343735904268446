"""`ledger rebuild`'s fill over processes (ledger/rebuild/parts.py) when one of them fails or
goes silent: the rebuild fails with the reason, stops the other processes, and leaves the live
tables as they were; the next rebuild succeeds."""

from __future__ import annotations

import functools
import multiprocessing
import os
import time

import pytest
from support import db
from support.ids import unique

from integration.test_rebuild_across_stores import _events_across_stores as events_across_stores
from ledger.cli_errors import CommandError
from ledger.rebuild import RebuildLimits, parts, rebuild
from ledger.storage.opening import open_recorder

NOWHERE = "postgresql://nobody@/nowhere?host=/nonexistent-socket-dir"
SILENT_S = 30.0  # how long the silent process's "opening" takes: far beyond the limit set below
PART_ENDS_WITHIN_S = 60.0  # the other process's start and fill of its few entries, with room to spare


def _ledger_of_three_stores(postgres, serve) -> tuple[str, dict[str, list[dict[str, object]]]]:
    database_url = postgres.create_database()
    server = serve(database_url)
    with server.client() as client:
        events_across_stores(client, unique("s1"), unique("s2"), unique("s3"))
    assert server.stop() is not None
    return database_url, db.dump_projections(database_url)


def _rebuild(database_url: str, opening_elsewhere) -> None:
    recorder = open_recorder(database_url, 2, 30, create_tables=False)
    try:
        rebuild(recorder, RebuildLimits(processes=2), None, opening_elsewhere)
    finally:
        recorder.close()


def test_a_part_that_fails_fails_the_rebuild_with_its_reason(postgres, serve):
    database_url, kept = _ledger_of_three_stores(postgres, serve)
    with pytest.raises(
        CommandError, match=r"the rebuild's process for \d+ stores? \(pid \d+\) failed: OperationalError"
    ):
        _rebuild(database_url, functools.partial(open_recorder, NOWHERE, 1, 1, create_tables=False))
    assert multiprocessing.active_children() == []
    assert db.dump_projections(database_url) == kept
    _rebuild(database_url, functools.partial(open_recorder, database_url, 2, 30, create_tables=False))
    assert db.dump_projections(database_url) == kept


def test_a_part_that_dies_fails_the_rebuild_in_one_line(postgres, serve):
    """Killed (the OOM killer, an operator's kill -9): `ledger rebuild` says so in one line, exit 2."""
    database_url, kept = _ledger_of_three_stores(postgres, serve)
    with pytest.raises(
        CommandError, match=r"ended without a word \(exit code 9\); the live tables are unchanged"
    ):
        _rebuild(database_url, functools.partial(os._exit, 9))
    assert multiprocessing.active_children() == []
    assert db.dump_projections(database_url) == kept


def test_a_silent_part_is_stopped_and_fails_the_rebuild(postgres, serve, monkeypatch):
    database_url, kept = _ledger_of_three_stores(postgres, serve)
    monkeypatch.setattr(parts, "SILENCE_MAX_S", 1.0)  # the rebuild's process's limit, not the part's
    started = time.monotonic()
    with pytest.raises(CommandError, match=r"said nothing for 1 s; the live tables are unchanged"):
        _rebuild(database_url, functools.partial(time.sleep, SILENT_S))
    assert time.monotonic() - started < SILENT_S, "the rebuild waited for the silent process"
    assert multiprocessing.active_children() == []  # stopped, not left sleeping
    assert db.dump_projections(database_url) == kept


def test_a_part_that_ends_before_the_rebuilds_own_fill_is_taken_in(postgres, serve):
    """The other process sends its state and ends while this one is still filling: its end is
    no failure, and its state is joined."""
    database_url, kept = _ledger_of_three_stores(postgres, serve)
    recorder = open_recorder(database_url, 2, 30, create_tables=False)
    ended_meanwhile = []

    def slow_fill(phase: str, position: int, head: int) -> None:
        if phase == "filling" and not ended_meanwhile:  # its first page: waits for the other's end
            deadline = time.monotonic() + PART_ENDS_WITHIN_S
            while multiprocessing.active_children() and time.monotonic() < deadline:
                time.sleep(0.05)
            ended_meanwhile.append(multiprocessing.active_children() == [])

    try:
        rebuild(
            recorder,
            RebuildLimits(processes=2, batch_entries=1),
            slow_fill,
            functools.partial(open_recorder, database_url, 2, 30, create_tables=False),
        )
    finally:
        recorder.close()
    assert ended_meanwhile == [True], "the other process did not end while this one was filling"
    assert db.dump_projections(database_url) == kept
