"""The state a batch is decided on, and the decisions.

The state comes from the writer's memory when it holds everything a batch reads (the bet that
nobody else wrote is checked when the batch is recorded), or from the database under the log's
write lock. Events are decided in arrival order, each seeing the effect of the ones before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ledger.domain.across_stores import Probe, Reads, SourceAndReserve, decide_any, reads_of
from ledger.domain.model import (
    Entry,
    EventType,
    Level,
    Outcome,
    Policy,
    RejectionReason,
    Reservation,
    StockEvent,
)
from ledger.domain.rules import LedgerState, Refusal, apply
from ledger.results import Original
from ledger.sql import Deferred, SqlTx
from ledger.state_cache import StateCache
from ledger.storage.recorders import LedgerRecorder

# An event key already recorded (its first outcome), or recorded earlier in this batch (the index
# of its entry).
Known = dict[tuple[str, str], Original | int]


@dataclass(slots=True)
class Pending:
    """A decided event whose position is known only after the insert."""

    entry_index: int | None = None  # index into the batch's entries, for accepted/rejected
    duplicate_of: Original | None = None
    duplicate_of_entry: int | None = None
    refusal: Refusal | None = None  # a command across stores refused whole: nothing recorded
    first_entry_index: int | None = None  # a command's first part (its parts are placed together)


@dataclass(slots=True)
class Work:
    """A batch being decided: its state, the log's head it was read at, and the entries so far."""

    state: LedgerState
    head: int
    versions: Callable[[], dict[str, int]]  # the stores' versions, read with the rest, for the insert
    entries: list[Entry] = field(default_factory=list)
    levels_after: list[tuple[Level, ...]] = field(default_factory=list)
    # Per entry, the index of its event's last entry: the event's position is that entry's
    # notification id, and every row the entry projects carries it (one event, one position).
    event_ends: list[int] = field(default_factory=list)


class NotInMemory(LookupError):
    """Deciding from memory read a level the writer's memory does not hold (sourcing reads its
    candidates' levels only as it needs them): the batch is decided again once it is fetched."""


@dataclass(slots=True)
class Missing:
    """What the writer's memory lacks to decide a batch by itself."""

    levels: set[tuple[str, str]] = field(default_factory=set)
    reservations: set[tuple[str, str]] = field(default_factory=set)
    stores: set[str] = field(default_factory=set)
    policy_stores: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.levels or self.reservations or self.stores or self.policy_stores)


def _stores(event: Reads) -> tuple[str, ...]:
    return (event.store_id, event.to_store) if event.to_store else (event.store_id,)


def _plain(events: list[StockEvent]) -> Sequence[Reads]:
    """The batch as the plain events whose keys it reads (a command across stores reads its
    parts', ledger/domain/across_stores.py); the batch itself when it has no command."""
    if all(type(event) is StockEvent for event in events):
        return events
    return [plain for event in events for plain in reads_of(event)]


def missing_from_memory(cache: StateCache, events: list[StockEvent]) -> Missing:
    """The keys a batch reads that the cache does not hold (a release's SKUs only once its
    reservation is held: they are asked for after it arrives)."""
    missing = Missing()
    for event in _plain(events):
        skus = [line.sku for line in event.lines]
        if event.reservation_id:
            key = (event.store_id, event.reservation_id)
            held = cache.reservations.get(key)
            if held is not None:
                skus += list(held[0].lines)
            elif (event.type is not EventType.RESERVATION or type(event) is Probe) and (
                key not in cache.absent_reservations
            ):
                # A release or shipment needs the reservation as it is, or its absence; so does
                # sourcing, whose new part goes to another store than one already holding the id
                # (a new per-store reservation's id is checked by the table's key instead).
                missing.reservations.add(key)
        for store in _stores(event):
            if store not in cache.store_versions:
                missing.stores.add(store)
            if store not in cache.store_policies:
                missing.policy_stores.add(store)
            missing.levels.update((store, sku) for sku in skus if (store, sku) not in cache.levels)
    return missing


@dataclass(frozen=True, slots=True)
class Lacking:
    """What memory lacked for a batch, as of its head and generation: still what it lacks while
    neither has moved (memory only gains keys then, or loses some to its bound, which deciding
    finds for itself). Found ahead of time, while the database is busy with a batch in flight."""

    missing: Missing
    head: int
    generation: int

    def current(self, cache: StateCache) -> bool:
        return cache.head == self.head and cache.generation == self.generation


def lacking(cache: StateCache, events: list[StockEvent]) -> Lacking:
    return Lacking(missing_from_memory(cache, events), cache.head, cache.generation)


def catch_up_and_fetch(
    recorder: LedgerRecorder, cache: StateCache, events: list[StockEvent], found: Lacking | None = None
) -> bool:
    """Brings the writer's memory to the database's head and reads the keys it lacks for a batch,
    outside the write lock, so that the batch can still be decided from memory and recorded in one
    statement: after another instance wrote, or when a batch brings a few new keys. What is read
    belongs with what memory holds (the same head), and anything committed meanwhile moves the
    head, which the one-statement batch checks under the lock (the bet is lost, nothing is wrong).
    `found`: what memory lacked, found earlier; used when the head has not moved since.
    False when the database is behind memory: a batch of this writer's own is still in flight."""
    generation = cache.generation
    with recorder.read_transaction(bounded=True) as tx:
        head = recorder.head(tx)
        if head < cache.head:
            return False
        cache.catch_up(tx, head)
        if found is not None and found.current(cache):  # caught up to `head`: nothing moved since
            missing = found.missing
        else:
            missing = missing_from_memory(cache, events)
        # What is read is kept only while memory is still at this head (StateCache.read_levels).
        at = (head, cache.generation)
        reservations = cache.read_reservations(tx, missing.reservations, at)
        levels = cache.read_levels(tx, missing.levels, at)
        versions = cache.read_store_versions(tx, missing.stores)
        policies = cache.read_store_policies(tx, missing.policy_stores, at)
        held = reservations.finish()
        released = {(store, sku) for (store, _), (r, _) in held.items() for sku in r.lines}
        levels.finish(released)
        found_versions = versions.finish()
        policies.finish()
    with cache.lock:
        if cache.generation != generation or cache.head != head:
            return False
        for store, version in found_versions.items():
            cache.store_versions.setdefault(store, version)
    cache.note_absent_reservations(missing.reservations - held.keys(), head, generation)
    return True


def read_absent_reservations(recorder: LedgerRecorder, cache: StateCache, events: list[StockEvent]) -> bool:
    """While a batch of this writer's is in flight, when all a batch lacks is reservation ids
    (sourcing's, at its candidates): reads them, and notes those the database does not hold as
    absent at memory's head. True when that leaves nothing lacking (none was held there).

    Memory is ahead of the database then (the batch in flight is in it), so nothing else is read:
    a value read now would be older than memory's. An id's absence is enough, and holds: the batch
    in flight's own reservations are in memory, and another writer's insert after this read moves
    the head that the next statement checks (its bet is lost, the batch recorded the ordinary
    way, and catching up forgets that id's absence)."""
    missing = missing_from_memory(cache, events)
    if not missing.reservations or missing.levels or missing.stores or missing.policy_stores:
        return False
    generation, head = cache.generation, cache.head
    with recorder.read_transaction(bounded=True) as tx:
        held = cache.read_reservations(tx, missing.reservations).found_keys()
    if held:
        return False  # its state is needed: read once the batch in flight has landed
    cache.note_absent_reservations(missing.reservations, head, generation)
    return True


def work_from_memory(cache: StateCache, events: list[StockEvent], head: int) -> Work | None:
    """The batch's state from the cache alone, or None when the cache lacks any of it. A sourcing
    command's candidates' levels are not copied in: the state reads them from the cache as the
    search needs them (most orders are served by one of the first candidates), and copies only
    those it changes; a level the cache lacks then raises NotInMemory while deciding."""
    levels: dict[tuple[str, str], Level] = {}
    reservations: dict[tuple[str, str], Reservation] = {}
    versions: dict[str, int] = {}
    policies: dict[str, dict[str, Policy]] = {}
    store_versions = cache.store_versions
    store_policies = cache.store_policies
    held_reservations = cache.reservations
    cached_levels = cache.levels
    for command in events:
        if type(command) is SourceAndReserve:
            reservation_id = command.reservation_id
            for store in command.candidates:
                if store not in versions:  # the batch's commands mostly name the same stores
                    version = store_versions.get(store)
                    held_policies = store_policies.get(store)
                    if version is None or held_policies is None:
                        return None
                    versions[store] = version
                    if held_policies:  # shared, never changed in place (copy on write)
                        policies[store] = held_policies
                key = (store, reservation_id)
                held = held_reservations.get(key)  # type: ignore[arg-type]
                if held is not None:
                    reservations[key] = held[0].copy()  # type: ignore[index]
                elif key not in cache.absent_reservations:
                    return None  # the id may be held there: the same order again, or a conflict
            continue
        for event in reads_of(command):
            skus = [line.sku for line in event.lines]
            if event.reservation_id:
                held = held_reservations.get((event.store_id, event.reservation_id))
                if held is not None:
                    reservations[(event.store_id, event.reservation_id)] = held[0].copy()
                    skus += list(held[0].lines)
                elif event.type is not EventType.RESERVATION and (
                    (event.store_id, event.reservation_id) not in cache.absent_reservations
                ):
                    return None  # a release or shipment needs the reservation as it is, or its absence
            for store in _stores(event):
                version = store_versions.get(store)
                if version is None:
                    return None
                versions[store] = version
                held_policies = store_policies.get(store)
                if held_policies is None:
                    return None
                if held_policies:  # shared, never changed in place (copy on write)
                    policies[store] = held_policies
                for sku in skus:
                    key = (store, sku)
                    cached = cached_levels.get(key)
                    if cached is None:
                        return None
                    levels[key] = cached.level.copy()

    def read_only_level(key: tuple[str, str]) -> Level:
        cached = cached_levels.get(key)
        if cached is None:
            raise NotInMemory(key)
        return cached.level

    state = LedgerState(levels, reservations, policies, read_only_level)
    return Work(state, head, lambda: dict(versions))


def work_from_database(
    recorder: LedgerRecorder, cache: StateCache, tx: SqlTx, events: list[StockEvent]
) -> tuple[Work, Known]:
    """Everything the batch reads, asked for at once (one round trip on PostgreSQL) under the
    write lock, then the cache brought up to the log's head before any of it is used."""
    level_keys: set[tuple[str, str]] = set()
    reservation_keys: set[tuple[str, str]] = set()
    stores: set[str] = set()
    for event in _plain(events):
        for store in _stores(event):
            stores.add(store)
            level_keys.update((store, line.sku) for line in event.lines)
        if event.reservation_id:
            reservation_keys.add((event.store_id, event.reservation_id))
    head_read = tx.defer(recorder.head_sql)
    keys_read = _read_event_keys(tx, [event.key for event in events])
    reservations_read = cache.read_reservations(tx, reservation_keys)
    levels_read = cache.read_levels(tx, level_keys)
    versions_read = cache.read_store_versions(tx, stores)
    policies_read = cache.read_store_policies(tx, stores)
    head = int(head_read.rows()[0]["head"])
    cache.catch_up(tx, head)
    known = _finish_event_keys(keys_read)
    reservations = reservations_read.finish()
    # A release without lines touches the reservation's SKUs.
    released_keys = {
        (store_id, sku) for (store_id, _), (held, _) in reservations.items() for sku in held.lines
    }
    levels = levels_read.finish(released_keys)
    state = LedgerState(
        levels={key: cached.level.copy() for key, cached in levels.items()},
        reservations={key: held.copy() for key, (held, _) in reservations.items()},
        policies={store: held for store, held in policies_read.finish().items() if held},
    )
    return Work(state, head, versions_read.finish), known


def decide_event(event: StockEvent, work: Work, known: Known) -> Pending:
    seen = known.get(event.key)
    if isinstance(seen, Original):
        return Pending(duplicate_of=seen)
    if isinstance(seen, int):
        return Pending(duplicate_of_entry=seen)
    decision = decide_any(event, work.state)
    if decision.refusal is not None:
        return Pending(refusal=decision.refusal)
    if decision.duplicate_of_position is not None:
        position = decision.duplicate_of_position
        if position < 0:  # placed earlier in this same batch
            return Pending(duplicate_of_entry=-position - 1)
        return Pending(duplicate_of=Original(Outcome.ACCEPTED, None, position))
    # The event's own entry comes last (a transfer records the receiving store's entry first):
    # its notification id is the event's position, carried by every entry of the event.
    last_index = len(work.entries) + len(decision.entries) - 1
    for entry in decision.entries:
        apply_entry(entry, work, last_index)
    known[event.key] = last_index
    return Pending(entry_index=last_index, first_entry_index=last_index - len(decision.entries) + 1)


def apply_entry(entry: Entry, work: Work, event_end: int | None = None) -> None:
    """Applies an entry to the batch's state. `event_end`: the index its event's last entry will
    have (the entry's own when its event has one entry)."""
    index = len(work.entries)
    end = index if event_end is None else event_end
    assert end >= index, (end, index)
    apply(entry, work.state, -(end + 1))  # a placeholder for the event's position until the insert
    work.entries.append(entry)
    work.event_ends.append(end)
    work.levels_after.append(tuple(work.state.level(entry.store_id, e.sku).copy() for e in entry.effects))


def _read_event_keys(tx: SqlTx, keys: list[tuple[str, str]]) -> list[Deferred]:
    columns, key = "source, event_id, position, outcome, reason", ("source", "event_id")
    return tx.read_by_keys("ledger_event_keys", columns, key, list(dict.fromkeys(keys)))


def _finish_event_keys(reads: list[Deferred]) -> Known:
    """Keys already recorded, with their first outcome. Keys recorded earlier in the same batch
    are added as the batch is decided (as entry indexes)."""
    found: Known = {}
    for read in reads:
        for row in read.rows():
            reason = row["reason"]
            found[(row["source"], row["event_id"])] = Original(
                Outcome(row["outcome"]),
                RejectionReason(reason) if reason else None,
                int(row["position"]),
            )
    return found
