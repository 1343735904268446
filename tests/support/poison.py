"""Events the writer cannot record, for tests: a bug that strikes one event (its id starts with
POISON), and a database that is unavailable for one event (its id starts with LOCKED). Both strike
in recording.insert, which every way of recording a batch goes through (a transaction under the
write lock, or one statement decided from memory)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.bootstrap import build_writer_from_environment
from ledger.writer import facade, recording
from ledger.writer.facade import Writer
from support.writer_processes import writer_process

OUTBOX_BYTES_MAX = 1 << 20

POISON = "poison-"
LOCKED = "locked-"


class PoisonBug(ValueError):
    """What a bug in the writer raises for a poisoned event."""


def poisoned(insert: Callable[..., Any]) -> Callable[..., Any]:
    def insert_or_fail(recorder: Any, tx: Any, work: Any, recorded_at: str) -> Any:
        for entry in work.entries:
            event_id = entry.event.event_id
            if event_id.startswith(POISON):
                raise PoisonBug(f"the writer cannot store event {event_id}")
            if event_id.startswith(LOCKED):
                raise sqlite3.OperationalError("database is locked")
        return insert(recorder, tx, work, recorded_at)

    return insert_or_fail


def install(setattr_: Callable[[object, str, Any], None] = setattr) -> None:
    """Poisons this process's writer path (pass monkeypatch.setattr to have it undone)."""
    insert = poisoned(recording.insert)
    setattr_(recording, "insert", insert)  # encode_one_statement's
    setattr_(facade, "insert", insert)  # Writer.record's


def build_poisoned_writer_from_environment() -> Writer:
    """The writer process's builder, poisoned: it runs in the writer process (spawned)."""
    install()
    return build_writer_from_environment()


def poisoned_writer_process(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> contextlib.AbstractContextManager[str]:
    """A poisoned writer process on the database; yields the path of its socket."""
    return writer_process(
        build_poisoned_writer_from_environment, database_url, tmp_path, monkeypatch, OUTBOX_BYTES_MAX
    )
