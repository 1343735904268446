"""Sourcing with `reserve` decided from the writer's memory (PostgreSQL's one-statement batches):
the candidates' levels are read from memory as the search needs them, never changed there before
the batch commits, and a level memory lacks is fetched before the batch is decided. (SQLite
decides every batch under its write lock from what it reads there: no memory path to test.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_ledger, build_writer
from ledger.clock import utc_now, utc_text
from ledger.config import Settings
from ledger.domain.across_stores import SourceAndReserve
from ledger.domain.model import EventType, Line, Outcome, StockEvent
from ledger.projections import queries
from ledger.results import EventResult
from ledger.service import Ledger
from ledger.writer.facade import CONTENDED_S, Writer
from ledger.writer.recording import OneStatement
from ledger.writer.submission import Submission

SOURCE = "tests/sourcing-memory"
STEPS = 5_000


@pytest.fixture
def writer_and_other(postgres: EmbeddedPostgres) -> Iterator[tuple[Writer, Ledger]]:
    """A writer driven by hand, and another instance writing to the same database."""
    database_url = postgres.create_database("sourcing_memory")
    writer = build_writer(Settings(database_url=database_url, writer_optimistic=True))
    other = build_ledger(Settings(database_url=database_url))
    other.start()
    try:
        yield writer, other
    finally:
        other.stop()
        writer.recorder.close()


def _record(writer: Writer, *events: StockEvent) -> list[EventResult]:
    answers: list[list[EventResult] | BaseException] = []
    writer.process([Submission(list(events), answers.append)])
    [results] = answers
    assert not isinstance(results, BaseException), results
    return results


def _receipt(event_id: str, store: str, *pairs: tuple[str, int]) -> StockEvent:
    return ev.stock_event(event_id, "stock.receipt", store, list(pairs), source=SOURCE)


def _sourcing(reservation_id: str, candidates: tuple[str, ...], *pairs: tuple[str, int]) -> SourceAndReserve:
    return SourceAndReserve(
        event_id=reservation_id,
        source=SOURCE,
        type=EventType.RESERVATION,
        time=utc_now(),
        store_id=candidates[0],
        lines=tuple(Line(sku, qty) for sku, qty in pairs),
        reservation_id=reservation_id,
        candidates=candidates,
        search_steps_max=STEPS,
    )


def _memory(writer: Writer) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        key: (cached.level.on_hand_units, cached.level.reserved_units)
        for key, cached in writer.cache.levels.items()
    }


def _chosen(writer: Writer, command: SourceAndReserve) -> list[tuple[str, int]]:
    """The stores and units a batch of the command alone reserves, decided from memory."""
    statement = writer.decide_from_memory([command], utc_text(utc_now()))
    assert statement is not None, "decided from memory"
    return [(entry.store_id, entry.effects[0].reserved_delta) for entry in statement.work.entries]


def test_deciding_from_memory_changes_no_level_of_memory_before_the_commit(
    writer_and_other: tuple[Writer, Ledger],
) -> None:
    """The search reads the candidates' levels as memory holds them, and the reservation is
    applied to copies: a batch decided and then never sent (a lost bet, a failure) leaves memory
    as it was."""
    writer, _ = writer_and_other
    _record(
        writer, _receipt("r1", "s1", ("A", 1)), _receipt("r2", "s2", ("A", 5)), _receipt("r3", "s3", ("A", 5))
    )
    before = _memory(writer)
    assert _chosen(writer, _sourcing("R1", ("s1", "s2", "s3"), ("A", 2))) == [("s2", 2)]
    assert _chosen(writer, _sourcing("R2", ("s1", "s3", "s2"), ("A", 6))) == [("s1", 1), ("s3", 5)]
    assert _memory(writer) == before
    [placed] = _record(writer, _sourcing("R1", ("s1", "s2", "s3"), ("A", 2)))
    assert placed.outcome is Outcome.ACCEPTED
    assert _memory(writer)[("s2", "A")] == (5, 2)


def test_a_candidates_level_memory_lacks_is_fetched_before_the_batch_is_decided(
    writer_and_other: tuple[Writer, Ledger],
) -> None:
    """The writer's memory knows both stores and A at each, not B at s1, which another instance
    received since: the search must not take the level it lacks for zero (s2 would serve), but
    fetch it, with the log's head, and choose s1."""
    writer, other = writer_and_other
    _record(writer, _receipt("r1", "s1", ("A", 5)), _receipt("r2", "s2", ("A", 5), ("B", 5)))
    assert ("s1", "B") not in writer.cache.levels
    [received] = other.submit_and_wait([_receipt("r3", "s1", ("B", 5))])
    assert received.outcome is Outcome.ACCEPTED
    command = _sourcing("R1", ("s1", "s2"), ("A", 1), ("B", 1))
    assert _chosen(writer, command) == [("s1", 1)]
    [placed] = _record(writer, command)
    assert placed.outcome is Outcome.ACCEPTED
    assert [store for store, _ in placed.placed] == ["s1"]


def test_a_reservation_id_held_at_a_candidate_that_memory_lacks_is_read(writer_and_other) -> None:
    """Another instance placed R1 at s1, and the writer's memory never held it (after a restart,
    or pushed out by its bound): sourcing R1 with the same lines over (s2, s1) is the same
    reservation again, as SQLite answers, not a second part at s2 holding the order twice."""
    writer, other = writer_and_other
    _record(writer, _receipt("r1", "s1", ("A", 5)), _receipt("r2", "s2", ("A", 5)))
    placed = ev.stock_event("p1", "stock.reservation", "s1", [("A", 2)], source=SOURCE, reservation_id="R1")
    [result] = other.submit_and_wait([placed])
    assert result.outcome is Outcome.ACCEPTED
    _record(writer, _receipt("r3", "s2", ("B", 1)))  # memory caught up to the log's head
    assert ("s1", "R1") not in writer.cache.reservations

    [again] = _record(writer, _sourcing("R1", ("s2", "s1"), ("A", 2)))
    [other_lines] = _record(writer, _sourcing("R1", ("s2", "s1"), ("A", 3)))

    assert again.outcome is Outcome.DUPLICATE, (again.outcome, again.placed)
    assert other_lines.outcome is Outcome.REJECTED and other_lines.reason is not None
    assert other_lines.reason.value == "reservation_conflict"
    assert ("s2", "R1") not in writer.cache.reservations


def test_a_batch_decided_while_another_is_in_flight_reads_only_whether_its_ids_are_held(
    writer_and_other,
) -> None:
    """While a batch is in flight, memory is ahead of the database and reads no values; sourcing's
    candidates' reservation ids are read all the same, for their absence: a new id is decided from
    memory (the batches overlap), an id another instance holds at a candidate is not (it is decided
    once the batch in flight has landed, over what that instance placed)."""
    writer, other = writer_and_other
    _record(writer, _receipt("r1", "s1", ("A", 5)), _receipt("r2", "s2", ("A", 5)))
    placed = ev.stock_event("p1", "stock.reservation", "s1", [("A", 2)], source=SOURCE, reservation_id="R1")
    [result] = other.submit_and_wait([placed])
    assert result.outcome is Outcome.ACCEPTED
    # Memory catches up (forgetting what the other instance changed), then holds s1's level again.
    _record(writer, _receipt("r3", "s1", ("A", 1)))
    time.sleep(CONTENDED_S)  # another writer was seen: memory decides nothing for that long
    assert ("s1", "R1") not in writer.cache.reservations

    def in_flight(reservation_id: str, qty: int) -> OneStatement | None:
        command = _sourcing(reservation_id, ("s2", "s1"), ("A", qty))
        return writer.decide_from_memory([command], utc_text(utc_now()), fetch=False)

    assert in_flight("R-new", 1) is not None, "a new id, known absent at every candidate"
    assert {("s1", "R-new"), ("s2", "R-new")} <= writer.cache.absent_reservations
    assert in_flight("R1", 2) is None, "an id held at a candidate waits for its reservation"
    assert ("s1", "R1") not in writer.cache.absent_reservations


def test_the_default_candidates_are_every_store_by_id_whatever_the_databases_collation(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sourcing without `stores` takes the stores by id (CONTRACT §6), as the rest of the ledger
    compares ids (Python, SQLite: by code point; its answer again, `_held_allocation`). PostgreSQL
    orders text by its database's collation, and a linguistic one (en_US.UTF-8, the usual default)
    puts `s-B` after `s-a` and `sa`: the candidate chosen first, and so the stores reserved, differed
    from SQLite's. This machine has no such locale, so the database's answer is put in that order."""
    ledger = build_ledger(Settings(database_url=database_url))
    ledger.start()
    try:
        stores = ["s-B", "s-a", "sa"]
        ledger.submit_and_wait([_receipt(f"stock-{store}", store, ("A", 1)) for store in stores])
        read = queries.stores_with_available

        def as_a_linguistic_collation_orders(tx: Any, skus: list[str], stores_max: int) -> list[str]:
            found = read(tx, skus, stores_max)
            return sorted(found, key=lambda store: (store.replace("-", "").casefold(), store))

        monkeypatch.setattr(queries, "stores_with_available", as_a_linguistic_collation_orders)
        assert ledger.stores_with_available(["A"], 10) == sorted(stores)
    finally:
        ledger.stop()
