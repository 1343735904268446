"""What a writer reads outside the writers' lock for a batch (deciding.catch_up_and_fetch) is kept
in memory only while memory is still at the head it was read at. In thread mode the writer's memory
is also its readers': a refresher may catch it up to another instance's newer write between the
read and the keeping, and a value kept then would look current at the new head, so that the next
batch is decided on it (an oversell, and levels that no longer add up)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import events as ev

from ledger.bootstrap import build_writer
from ledger.config import Settings
from ledger.domain.model import Outcome, RejectionReason
from ledger.results import EventResult
from ledger.state_cache import ReadAt, StateCache
from ledger.writer import deciding
from ledger.writer.facade import Writer
from ledger.writer.submission import Submission

STORE = "s-1"


@pytest.fixture
def two_writers(database_url: str) -> Iterator[tuple[Writer, Writer]]:
    first = build_writer(Settings(database_url=database_url))
    first.recorder.create_table()
    second = build_writer(Settings(database_url=database_url))
    try:
        yield first, second
    finally:
        first.recorder.close()
        second.recorder.close()


def _record(writer: Writer, *events: Any) -> EventResult:
    answers: list[Any] = []
    writer.process([Submission(list(events), answers.append)])
    [results] = answers
    assert not isinstance(results, BaseException), results
    return results[0]


def test_a_level_read_before_another_instances_write_is_not_kept_at_the_newer_head(
    two_writers: tuple[Writer, Writer],
) -> None:
    first, second = two_writers
    _record(second, ev.stock_event("r-1", "stock.receipt", STORE, [("K", 10)]))
    # The first writer's memory holds the store, not K's level.
    _record(first, ev.stock_event("r-2", "stock.receipt", STORE, [("OTHER", 1)]))
    assert (STORE, "K") not in first.cache.levels
    wanted = ev.stock_event("res-1", "stock.reservation", STORE, [("K", 10)], reservation_id="R1")

    read_levels = first.cache.read_levels

    def read_then_the_other_instance_writes(tx: Any, keys: set[tuple[str, str]], *at: Any) -> Any:
        pending = read_levels(tx, keys, *at)  # K read: 10 available
        taken = ev.stock_event("res-0", "stock.reservation", STORE, [("K", 10)], reservation_id="R0")
        assert _record(second, taken).outcome is Outcome.ACCEPTED
        with first.recorder.read_transaction() as refresh:  # the readers' refresher, in thread mode
            first.cache.catch_up(refresh, first.recorder.head(refresh))
        return pending

    first.cache.read_levels = read_then_the_other_instance_writes  # type: ignore[method-assign]
    try:
        assert not deciding.catch_up_and_fetch(first.recorder, first.cache, [wanted])
    finally:
        first.cache.read_levels = read_levels  # type: ignore[method-assign]
    # On SQLite the batch below is decided under the lock, which reads K again whatever memory
    # holds: what memory kept is what would be decided on where batches are one statement.
    assert (STORE, "K") not in first.cache.levels, "a level read before the other's write was kept"

    refused = _record(first, wanted)
    assert refused.outcome is Outcome.REJECTED, "decided on a level read before the other's reservation"
    assert refused.reason is RejectionReason.INSUFFICIENT_STOCK
    with first.recorder.read_transaction() as tx:
        [level] = tx.fetchall(
            "SELECT on_hand, reserved FROM ledger_levels WHERE store_id = %s AND sku = 'K'", (STORE,)
        )
    assert (level["on_hand"], level["reserved"]) == (10, 10)


# Each read outside the lock, and where it keeps what it found.
_READS: dict[str, tuple[Callable[[StateCache, Any, ReadAt], object], Callable[[StateCache], object]]] = {
    "levels": (lambda cache, tx, at: cache.read_levels(tx, {(STORE, "K")}, at).finish(), lambda c: c.levels),
    "reservations": (
        lambda cache, tx, at: cache.read_reservations(tx, {(STORE, "R1")}, at).finish(),
        lambda c: c.reservations,
    ),
    "policies": (
        lambda cache, tx, at: cache.read_store_policies(tx, {STORE}, at).finish(),
        lambda c: c.store_policies,
    ),
}


@pytest.mark.parametrize("kind", sorted(_READS))
def test_nothing_read_for_a_head_memory_has_left_is_kept(
    two_writers: tuple[Writer, Writer], kind: str
) -> None:
    first, _ = two_writers
    placed = ev.stock_event("res-1", "stock.reservation", STORE, [("K", 1)], reservation_id="R1")
    _record(first, ev.stock_event("r-1", "stock.receipt", STORE, [("K", 10)]), placed)
    first.forget()
    read, kept = _READS[kind]
    head, generation = first.cache.head, first.cache.generation
    with first.recorder.read_transaction() as tx:
        read(first.cache, tx, (head - 1, generation))  # made before memory moved on to `head`
        read(first.cache, tx, (head, generation - 1))  # made before memory was emptied
    assert not kept(first.cache), f"{kind} read where memory has left were kept"
    with first.recorder.read_transaction() as tx:
        read(first.cache, tx, (head, generation))
    assert kept(first.cache), f"{kind} read where memory is were not kept"
