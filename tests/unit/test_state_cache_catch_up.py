"""How the writer's and readers' memory keeps up with other instances' writes: what they changed is
forgotten (read again by key when needed), and an empty memory reads nothing back at all."""

from __future__ import annotations

from typing import Any

from ledger.domain.model import Level, Reservation
from ledger.state_cache import CachedLevel, StateCache


class _Rows:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def rows(self) -> list[dict[str, Any]]:
        return self._rows


class _Tx:
    """Answers catch-up's four reads by the table they name; counts them."""

    qmark = False

    def __init__(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        self.tables = tables
        self.reads: list[str] = []

    def defer(self, sql: str, params: Any = ()) -> _Rows:
        table = next(name for name in self.tables if f"FROM {name} " in sql)
        self.reads.append(table)
        return _Rows(self.tables[table])


def _cache() -> StateCache:
    return StateCache(levels_max=100, reservations_max=100, catch_up_events_max=100_000)


def _reservation(reservation_id: str) -> Reservation:
    return Reservation("s1", reservation_id, None, None, {}, placed_at_position=1)


def _tables() -> dict[str, list[dict[str, Any]]]:
    return {
        "ledger_history": [{"store_id": "s1", "sku": "A"}],
        "ledger_reservations": [
            {"store_id": "s1", "reservation_id": "R1"},
            {"store_id": "s1", "reservation_id": "R2"},
        ],
        "ledger_events": [],
        "ledger_policies": [],
    }


def test_what_another_instance_wrote_is_forgotten_and_the_rest_kept() -> None:
    cache = _cache()
    cache.head = 10
    cache.levels[("s1", "A")] = CachedLevel(Level(5, 0, 0), 10, None)
    cache.levels[("s1", "B")] = CachedLevel(Level(7, 0, 0), 9, None)
    cache.reservations[("s1", "R1")] = (_reservation("R1"), 8)
    cache.absent_reservations.add(("s1", "R2"))
    cache.catch_up(_Tx(_tables()), 20)  # type: ignore[arg-type]
    assert cache.head == 20
    assert set(cache.levels) == {("s1", "B")}, "A changed since: read again when asked"
    assert ("s1", "R1") not in cache.reservations, "R1 changed since"
    assert ("s1", "R2") not in cache.absent_reservations, "R2 was placed since: no longer known absent"


def test_an_empty_memory_reads_nothing_back() -> None:
    """After `forget` (head 0), catching up must not read the whole log only to forget it."""
    cache = _cache()
    tx = _Tx(_tables())
    cache.catch_up(tx, 5000)  # type: ignore[arg-type]
    assert (cache.head, tx.reads) == (5000, [])


def test_a_readers_value_is_not_kept_once_the_cache_was_emptied_since_it_began() -> None:
    """A reader read K at head 100; meanwhile a commit of K at 105 was installed, then the cache was
    emptied (the writer's connection dropped: head 0). K as read must not pass for current."""
    cache = _cache()
    generation = cache.generation
    cache.clear(0)
    cache.offer_level(("s1", "K"), CachedLevel(Level(5), 98, None), 100, generation)
    cache.offer_store_policies("s1", {}, 100, generation)
    assert ("s1", "K") not in cache.levels
    assert "s1" not in cache.store_policies
    cache.offer_level(("s1", "K"), CachedLevel(Level(5), 98, None), 100, cache.generation)
    cache.offer_store_policies("s1", {}, 100, cache.generation)
    assert ("s1", "K") in cache.levels
    assert "s1" in cache.store_policies
