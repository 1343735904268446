"""How the writer's and readers' memory keeps up with other instances' writes: what they changed is
forgotten (read again by key when needed), and an empty memory reads nothing back at all."""

from __future__ import annotations

import threading
from typing import Any

from ledger.domain.model import Level, Policy, Reservation
from ledger.state_cache import CachedLevel, Commit, StateCache

WAIT_S = 10.0  # the longest a step of these tests may wait for another thread


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


class _SlowTx(_Tx):
    """The first read waits until `go` is set: a database that answers slowly."""

    def __init__(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(tables)
        self.reading = threading.Event()
        self.go = threading.Event()

    def defer(self, sql: str, params: Any = ()) -> _Rows:
        answer = super().defer(sql, params)
        if len(self.reads) == 1:
            self.reading.set()
            assert self.go.wait(WAIT_S), "the test never let the read finish"
        return answer


def _catching_up(cache: StateCache, tx: _SlowTx, log_head: int) -> threading.Thread:
    thread = threading.Thread(target=cache.catch_up, args=(tx, log_head), daemon=True)
    thread.start()
    assert tx.reading.wait(WAIT_S)
    return thread


def test_a_slow_read_does_not_hold_memory_from_the_commits_installed_meanwhile() -> None:
    """An HTTP worker's event loop installs each commit of its writer under the cache's lock: a
    catch-up waiting on the database under it froze every request of the worker."""
    cache = _cache()
    cache.head = 10
    cache.levels[("s1", "B")] = CachedLevel(Level(7, 0, 0), 9, None)
    cache.store_policies["s1"] = {}
    tx = _SlowTx({**_tables(), "ledger_policies": [{"store_id": "s1", "sku": "A", "policy": None}]})
    thread = _catching_up(cache, tx, 20)
    newer = CachedLevel(Level(9, 0, 0), 11, None)
    installing = threading.Thread(
        target=cache.install,
        args=(Commit({("s1", "C"): newer}, {}, {"s1": 3}, first_position=11, head=11),),
        daemon=True,
    )
    installing.start()
    installing.join(WAIT_S)
    assert not installing.is_alive(), "the install waited for the catch-up's read"
    assert cache.head == 11 and cache.levels[("s1", "C")] is newer
    tx.go.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert cache.head == 20
    assert set(cache.levels) == {("s1", "B"), ("s1", "C")}, "A changed since: read again when asked"
    assert "s1" not in cache.store_policies, "a commit landed during the read: its policies are read again"
    assert cache.store_versions == {"s1": 3}


def test_memory_emptied_during_the_read_is_brought_to_the_head_all_the_same() -> None:
    """The writer decides against the head it read: whatever happened to memory meanwhile, the
    catch-up must leave memory at that head at least, holding nothing older."""
    cache = _cache()
    cache.head = 10
    cache.levels[("s1", "B")] = CachedLevel(Level(7, 0, 0), 9, None)
    tx = _SlowTx(_tables())
    thread = _catching_up(cache, tx, 20)
    cache.clear(12)
    cache.levels[("s1", "A")] = CachedLevel(Level(1, 0, 0), 12, None)  # a reader's, at head 12
    tx.go.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert cache.head == 20
    assert ("s1", "A") not in cache.levels, "A was read at 12 and changed before 20"
    assert len(tx.reads) == 8, "the changes were read again, from the emptied memory's head"


def test_a_commit_of_this_instance_landing_past_the_read_head_keeps_its_policy() -> None:
    """A catch-up reads the changes up to the log's head 20 while this instance's own commit of 21,
    setting a newer policy, is installed: past head + 1, it leaves the head where it was. Applying the
    read's older policy over it served that policy to readers until the next refresh."""
    cache = _cache()
    cache.head = 10
    cache.store_policies["s1"] = {}
    older = {"store_id": "s1", "sku": "A", "policy": '{"safety_stock": 2}', "position": 20}
    tx = _SlowTx({**_tables(), "ledger_policies": [older]})
    thread = _catching_up(cache, tx, 20)
    newer = Policy(5)
    cache.install(Commit({}, {}, {}, first_position=21, head=21, policies={("s1", "A"): newer}))
    assert cache.head == 10 and cache.store_policies["s1"] == {"A": newer}
    tx.go.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert cache.head == 20
    held = cache.store_policies.get("s1")
    assert held is None or held == {"A": newer}, f"the newer policy was overwritten: {held}"


def test_a_readers_copy_of_a_stores_policies_kept_during_a_catch_up_is_not_made_older() -> None:
    """A reader copies a store's policies from its snapshot at 25 while a catch-up reads up to 20:
    the catch-up's policy of 20 applied over that copy served it until the next refresh."""
    cache = _cache()
    cache.head = 10
    cache.levels[("s1", "B")] = CachedLevel(Level(7, 0, 0), 9, None)
    older = {"store_id": "s1", "sku": "A", "policy": '{"safety_stock": 2}', "position": 20}
    tx = _SlowTx({**_tables(), "ledger_policies": [older]})
    thread = _catching_up(cache, tx, 20)
    newer = Policy(5)
    cache.offer_store_policies("s1", {"A": newer}, 25, cache.generation)
    assert cache.store_policies["s1"] == {"A": newer}
    tx.go.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    held = cache.store_policies.get("s1")
    assert held is None or held == {"A": newer}, f"the newer policy was overwritten: {held}"
