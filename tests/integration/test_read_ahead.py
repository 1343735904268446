"""What the import's writer reads ahead for the batch after next: the keys memory lacks, found while
the batch before is in flight (ledger/importer/pipeline.py), are trusted only while memory's head
and generation are what they were then; otherwise they are looked for again."""

from __future__ import annotations

from pathlib import Path

from support import events as ev

from ledger.bootstrap import build_writer
from ledger.config import Settings
from ledger.writer import deciding
from ledger.writer.facade import Writer
from ledger.writer.submission import Submission


def _writer(tmp_path: Path) -> Writer:
    return build_writer(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}"))


def _record(writer: Writer, *events: object) -> None:
    answers: list[object] = []
    writer.process([Submission(list(events), answers.append)])  # type: ignore[arg-type]
    assert answers and not isinstance(answers[0], BaseException), answers


def test_keys_found_missing_ahead_of_time_are_read(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    try:
        _record(writer, ev.stock_event("r-1", "stock.receipt", "s-1", [("A", 5), ("B", 3)]))
        writer.cache.levels.pop(("s-1", "B"))
        later = [ev.stock_event("s-1", "stock.sale", "s-1", [("A", 1), ("B", 1)])]
        found = deciding.lacking(writer.cache, later)
        assert found.missing.levels == {("s-1", "B")}
        assert deciding.catch_up_and_fetch(writer.recorder, writer.cache, later, found)
        assert ("s-1", "B") in writer.cache.levels
        assert not deciding.missing_from_memory(writer.cache, later)
    finally:
        writer.recorder.close()


def test_what_was_found_before_memory_moved_is_looked_for_again(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    try:
        _record(writer, ev.stock_event("r-1", "stock.receipt", "s-1", [("A", 5)]))
        later = [ev.stock_event("s-1", "stock.sale", "s-1", [("A", 1), ("B", 1)])]
        # Found when memory held A and B ("nothing missing"), then memory moved on and lost B.
        _record(writer, ev.stock_event("r-2", "stock.receipt", "s-1", [("B", 3)]))
        stale = deciding.Lacking(deciding.Missing(), writer.cache.head - 1, writer.cache.generation)
        writer.cache.levels.pop(("s-1", "B"))
        assert not stale.current(writer.cache)
        assert deciding.catch_up_and_fetch(writer.recorder, writer.cache, later, stale)
        assert ("s-1", "B") in writer.cache.levels, "a stale finding was trusted"
        # And a finding from before memory was emptied is not current either.
        found = deciding.lacking(writer.cache, later)
        writer.forget()
        assert not found.current(writer.cache)
    finally:
        writer.recorder.close()
