"""Rebuilds every projection from the event log alone, in one transaction.

The replay runs the same `apply` as the writer and feeds the same `ProjectionBatch`, so a rebuilt
table equals the table the writer kept (tests/integration/test_rebuild.py compares them).
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.domain.rules import LedgerState, apply
from ledger.projections.schema import PROJECTION_TABLES
from ledger.projections.tables import ProjectionBatch, RecordedEntry, write_batch
from ledger.storage.codec import decode
from ledger.storage.recorders import LedgerRecorder

NOTIFICATIONS_PER_PAGE = 2000


def rebuild(recorder: LedgerRecorder, progress: Callable[[int, int], None] | None = None) -> int:
    """Replays the whole log; returns the number of entries replayed. Writers wait meanwhile."""
    state = LedgerState()
    replayed = 0
    with recorder.write_transaction() as tx:
        head = recorder.head(tx)
        for table in PROJECTION_TABLES:
            tx.execute(f"DELETE FROM {table}")
        position = 0
        while position < head:
            # The library's own reader of the log (notification ids are our positions).
            page = recorder.select_notifications(
                start=position, limit=NOTIFICATIONS_PER_PAGE, stop=head, inclusive_of_start=False
            )
            if not page:
                break
            batch = ProjectionBatch()
            for note in page:
                entry, recorded_at = decode(str(note.originator_id), note.topic, note.state)
                apply(entry, state, note.id)
                levels_after = tuple(state.level(entry.store_id, e.sku).copy() for e in entry.effects)
                batch.add(RecordedEntry(note.id, entry, levels_after, recorded_at), state)
                position = note.id
            write_batch(tx, batch)
            replayed += len(page)
            if progress:
                progress(position, head)
    return replayed
