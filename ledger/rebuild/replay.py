"""The log replayed through the writer's own rules, a page at a time, resumable.

The replay runs the same `apply` as the writer and feeds the same `ProjectionBatch`, so what it
writes equals what the writer kept (tests/integration/test_rebuild.py compares them). Like the
writer, it gives every entry its event's position: the notification id of the event's last entry
(a transfer's incoming entry waits for the transfer's own, which may be on the next page).

A `Replay` remembers how far it got: `ledger rebuild` replays up to one head, then on from there
to the next as the ledger goes on recording, with the same state. `ledger verify` replays once.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

from ledger.domain.rules import LedgerState, apply
from ledger.projections.tables import ProjectionBatch, RecordedEntry
from ledger.storage.codec import DecodedEntry, decode
from ledger.storage.recorders import LedgerRecorder


@dataclass(slots=True)
class ReplayedPage:
    """One page of the log replayed: what it changed in the projections, up to which position."""

    batch: ProjectionBatch
    position: int  # the notification id of the page's last entry
    entries: int


class Replay:
    """The replay state (every level, reservation and policy the log has made so far: memory grows
    with those, not with the log) and the position it has reached."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.position = 0
        self.entries = 0

    def pages(self, recorder: LedgerRecorder, head: int, page_entries: int) -> Iterator[ReplayedPage]:
        """Streams the log after the position reached, up to `head` (an event's position: the head
        of the log at some moment), `page_entries` at a time. Memory holds one page besides the
        state."""
        event: list[DecodedEntry] = []  # the entries read of an event whose last entry is still to come
        while self.position < head:
            page = recorder.log_page(self.position, head, page_entries)
            if not page:
                break
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


def _assert_continues(before: DecodedEntry, entry: DecodedEntry, notification_id: int) -> None:
    """An event's entries are consecutive in the log (the writer records them in one go)."""
    same_event = entry.entry.event.key == before.entry.event.key
    assert same_event and entry.event_entries_after == before.event_entries_after - 1, (
        f"notification {notification_id} does not continue the event {before.entry.event.key}"
    )


def _project(event: list[DecodedEntry], position: int, state: LedgerState, batch: ProjectionBatch) -> None:
    for decoded in event:
        entry = decoded.entry
        apply(entry, state, position)
        levels_after = tuple(state.level(entry.store_id, e.sku).copy() for e in entry.effects)
        batch.add(RecordedEntry(position, entry, levels_after, decoded.recorded_at), state)
