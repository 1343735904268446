"""Rebuilds every projection from the event log alone, in one transaction.

The replay runs the same `apply` as the writer and feeds the same `ProjectionBatch`, so a rebuilt
table equals the table the writer kept (tests/integration/test_rebuild.py compares them). Like the
writer, it gives every entry its event's position: the notification id of the event's last entry
(a transfer's incoming entry waits for the transfer's own, which may be on the next page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ledger.domain.rules import LedgerState, apply
from ledger.projections.schema import PROJECTION_TABLES
from ledger.projections.tables import ProjectionBatch, RecordedEntry, write_batch
from ledger.storage.codec import DecodedEntry, decode
from ledger.storage.recorders import LedgerRecorder

NOTIFICATIONS_PER_PAGE = 2000


@dataclass(slots=True)
class ReplayedPage:
    """One page of the log replayed: what it changed in the projections, up to which position."""

    batch: ProjectionBatch
    position: int  # the notification id of the page's last entry
    entries: int


def replay(recorder: LedgerRecorder, head: int) -> Iterator[ReplayedPage]:
    """Streams the log up to `head` through the library's reader, a page at a time, and runs every
    entry through the writer's `apply` and `ProjectionBatch`: `ledger rebuild` writes the batches,
    `ledger verify` (ledger/verify.py) compares them. Memory holds one page and the replay state."""
    state = LedgerState()
    event: list[DecodedEntry] = []  # the entries read of an event whose last entry is still to come
    position = 0
    while position < head:
        # The library's own reader of the log.
        page = recorder.select_notifications(
            start=position, limit=NOTIFICATIONS_PER_PAGE, stop=head, inclusive_of_start=False
        )
        if not page:
            break
        batch = ProjectionBatch()
        for note in page:
            decoded = decode(str(note.originator_id), note.topic, note.state)
            if event:
                _assert_continues(event[-1], decoded, note.id)
            event.append(decoded)
            position = note.id
            if decoded.event_entries_after == 0:  # the event's last entry: its id is the position
                _project(event, position, state, batch)
                event = []
        yield ReplayedPage(batch, position, len(page))
    assert not event, f"the log ends inside an event, after notification {position}"


def rebuild(recorder: LedgerRecorder, progress: Callable[[int, int], None] | None = None) -> int:
    """Replays the whole log; returns the number of entries replayed. Writers wait meanwhile."""
    replayed = 0
    with recorder.write_transaction() as tx:
        head = recorder.head(tx)
        for table in PROJECTION_TABLES:
            tx.execute(f"DELETE FROM {table}")
        for page in replay(recorder, head):
            write_batch(tx, page.batch)
            replayed += page.entries
            if progress:
                progress(page.position, head)
    return replayed


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
