"""The log replayed through the writer's own rules, a page at a time, resumable.

The replay runs the same `apply` as the writer and feeds the same `ProjectionBatch`, so what it
writes equals what the writer kept (tests/integration/test_rebuild.py compares them). Like the
writer, it gives every entry its event's position: the notification id of the event's last entry
(a transfer's incoming entry waits for the transfer's own, which may be on the next page).

A `Replay` remembers how far it got: `ledger rebuild` replays up to one head, then on from there
to the next as the ledger goes on recording, with the same state. `ledger verify` replays once.

A replay can be given some stores only (`ledger rebuild` spreads its fill over processes by store:
ledger/rebuild/parts.py). The rules keep each store's levels, reservations and policies apart,
so it applies the entries of its stores and reads past the rest undecoded, but for an event with
entries at several stores it still reads the others' entries before its own, to number its
history rows after theirs. `join` then takes in what the other processes replayed, and the
replay goes on with every store.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ledger.domain.rules import LedgerState, apply
from ledger.projections.tables import ProjectionBatch, RecordedEntry, history_row_count
from ledger.storage.codec import DecodedEntry, decode, may_have_entries_after
from ledger.storage.recorders import LedgerRecorder, LogEntry


class LogPages(Protocol):
    """Where a replay reads the log: a recorder, or a transaction of one (the rebuild's swap)."""

    def log_page(self, after: int, stop: int, limit: int) -> list[LogEntry]: ...


@dataclass(frozen=True)
class Stores:
    """Some stores: those named, or (`but`) every store but those named."""

    named: frozenset[str]
    but: bool = False

    def __contains__(self, store_id: object) -> bool:
        return (store_id in self.named) is not self.but


@dataclass(slots=True)
class ReplayedPage:
    """One page of the log replayed: what it changed in the projections, up to which position."""

    batch: ProjectionBatch
    position: int  # the notification id of the page's last entry
    entries: int


class Replay:
    """The replay state (every level, reservation and policy the log has made so far: memory grows
    with those, not with the log) and the position it has reached."""

    def __init__(self, stores: Stores | None = None) -> None:
        self.state = LedgerState()
        self.position = 0
        self.entries = 0
        self.stores = stores  # None: every store

    def join(self, states: Iterable[LedgerState]) -> None:
        """Takes in the states of the replays of the other stores, up to the same position: from
        here on this replay goes on with every store."""
        for state in states:
            self.state.levels.update(state.levels)
            self.state.reservations.update(state.reservations)
            self.state.policies.update(state.policies)
        self.stores = None

    def pages(self, recorder: LogPages, head: int, page_entries: int) -> Iterator[ReplayedPage]:
        """Streams the log after the position reached, up to `head` (an event's position: the head
        of the log at some moment), `page_entries` at a time. Memory holds one page besides the
        state."""
        if self.stores is not None:
            yield from self._pages_of_stores(recorder, head, page_entries, self.stores)
            return
        event: list[DecodedEntry] = []  # the entries read of an event whose last entry is still to come
        for page in self._log_pages(recorder, head, page_entries):
            batch = ProjectionBatch()
            for notification_id, store_id, topic, state in page:
                decoded = decode(store_id, topic, state)
                if event:
                    _assert_continues(event[-1], decoded, notification_id)
                event.append(decoded)
                self.position = notification_id
                if decoded.event_entries_after == 0:  # the event's last entry: its id is the position
                    _project(event, self.position, self.state, batch)
                    event = []
            self.entries += len(page)
            yield ReplayedPage(batch, self.position, len(page))
        assert not event, f"the log ends inside an event, after notification {self.position}"

    def _log_pages(self, recorder: LogPages, head: int, page_entries: int) -> Iterator[list[LogEntry]]:
        """The log's pages after the position reached, up to `head`: the caller's replay of each
        page moves the position on."""
        while self.position < head:
            page = recorder.log_page(self.position, head, page_entries)
            if not page:
                return
            yield page

    def _pages_of_stores(
        self, recorder: LogPages, head: int, page_entries: int, stores: Stores
    ) -> Iterator[ReplayedPage]:
        """`pages` for some stores only. Of another store's entry only what numbering needs is read:
        whether its event goes on after it, and if so how many history rows it makes."""
        mine: list[tuple[DecodedEntry, int]] = []  # this replay's entries of the event being read,
        # each with its first history row's line_no
        entries_left = 0  # entries of the event being read still to come (0: between events)
        line_no = 0  # history rows of that event so far, every store's
        first: DecodedEntry | None = None  # the first entry of the event being read
        for page in self._log_pages(recorder, head, page_entries):
            batch = ProjectionBatch()
            for notification_id, store_id, topic, state in page:
                self.position = notification_id
                own = store_id in stores
                decoded: DecodedEntry | None = None
                if entries_left == 0:  # an event's first entry
                    if not own and not may_have_entries_after(topic, state):
                        continue  # another store's event of one entry
                    decoded = first = decode(store_id, topic, state)
                    entries_left, line_no = decoded.event_entries_after, 0
                else:
                    entries_left -= 1
                    # Ours, or another store's with entries after it (its rows number ours);
                    # another store's last entry is not read.
                    if own or entries_left:
                        decoded = decode(store_id, topic, state)
                        assert first is not None
                        _assert_continues(first, decoded, notification_id, entries_left)
                if own:
                    assert decoded is not None
                    mine.append((decoded, line_no))
                if decoded is not None:
                    line_no += history_row_count(decoded.entry)
                if entries_left == 0 and mine:  # the event's last entry: its id is the position
                    _project_some(mine, notification_id, not own, self.state, batch)
                    mine = []
            self.entries += len(page)
            yield ReplayedPage(batch, self.position, len(page))
        assert not entries_left, f"the log ends inside an event, after notification {self.position}"


def replay(recorder: LedgerRecorder, head: int, page_entries: int) -> Iterator[ReplayedPage]:
    """The whole log up to `head`, from the start."""
    return Replay().pages(recorder, head, page_entries)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cycle collector off for a replay. The replay makes millions of small objects and
    keeps the state's alive, so each collection walks them all again: measured, a third of the
    replay's CPU. What it makes has no reference cycles, so nothing waits on the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _assert_continues(
    before: DecodedEntry, entry: DecodedEntry, notification_id: int, entries_left: int | None = None
) -> None:
    """An event's entries are consecutive in the log (the writer records them in one go).
    `before` is the entry just before, or with `entries_left` (what should follow this one) the
    event's first."""
    if entries_left is None:
        entries_left = before.event_entries_after - 1
    same_event = entry.entry.event.key == before.entry.event.key
    assert same_event and entry.event_entries_after == entries_left, (
        f"notification {notification_id} does not continue the event {before.entry.event.key}"
    )


def _project(event: list[DecodedEntry], position: int, state: LedgerState, batch: ProjectionBatch) -> None:
    for decoded in event:
        entry = decoded.entry
        apply(entry, state, position)
        levels_after = tuple(state.level(entry.store_id, e.sku).copy() for e in entry.effects)
        batch.add(RecordedEntry(position, entry, levels_after, decoded.recorded_at), state)


def _project_some(
    entries: list[tuple[DecodedEntry, int]],
    position: int,
    key_elsewhere: bool,
    state: LedgerState,
    batch: ProjectionBatch,
) -> None:
    """`_project` for a replay of some stores: each entry's rows numbered from the line_no given,
    and the event's key left to the replay of its last entry's store."""
    for decoded, line_no_from in entries:
        entry = decoded.entry
        apply(entry, state, position)
        levels_after = tuple(state.level(entry.store_id, e.sku).copy() for e in entry.effects)
        recorded = RecordedEntry(
            position, entry, levels_after, decoded.recorded_at, line_no_from, key_elsewhere
        )
        batch.add(recorded, state)
