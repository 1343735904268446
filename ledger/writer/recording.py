"""Recording a decided batch: its entries encoded for the log, their projections, and what the
writer's memory takes once they have committed. On PostgreSQL a batch decided from memory is
encoded as the arguments of one statement instead (`encode_one_statement`)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.projections.tables import ProjectionBatch, RecordedEntry, write_batch
from ledger.sql import SqlTx
from ledger.state_cache import CachedLevel, Commit
from ledger.storage.codec import encode
from ledger.storage.recorders import LedgerRecorder
from ledger.writer.deciding import Pending, Work


def insert(recorder: LedgerRecorder, tx: SqlTx, work: Work, recorded_at: str) -> tuple[list[int], Commit]:
    """Records the batch's entries and projections; returns each entry's event position and what
    the cache takes once the transaction has committed.

    The entries get the notification ids head + 1 onwards, one each; an event's position is its
    last entry's id, and every projection row of the event carries it (a transfer's incoming
    entry included), so the event is one position everywhere and no read shows half of it. The
    cache's contiguity (Commit.first_position..head) is in notification ids, which every position
    of the batch lies within."""
    if not work.entries:
        return [], Commit({}, {}, {}, work.head + 1, work.head)
    assert work.event_ends[-1] == len(work.entries) - 1, "a batch ends with an event's last entry"
    versions = work.versions()
    stored = []
    for index, entry in enumerate(work.entries):
        versions[entry.store_id] += 1
        entries_after = work.event_ends[index] - index
        stored.append(encode(entry, versions[entry.store_id], recorded_at, entries_after))
    notification_ids = recorder.insert_entries(tx, stored, work.head)
    assert notification_ids == sorted(notification_ids), "notification ids must grow in insert order"
    positions = [notification_ids[end] for end in work.event_ends]
    batch = ProjectionBatch()
    for index, entry in enumerate(work.entries):
        batch.add(RecordedEntry(positions[index], entry, work.levels_after[index], recorded_at), work.state)
    for held, _ in batch.reservations.values():
        if held.placed_at_position < 0:  # placed in this batch: now its position is known
            held.placed_at_position = positions[-held.placed_at_position - 1]
    write_batch(tx, batch)
    # The batch's own objects go to the cache, not copies: this batch's state is not used
    # again once it is recorded (every batch starts from copies of the cache's values).
    installed_levels = {
        key: CachedLevel(level, position, updated_at)
        for key, (level, position, updated_at) in batch.levels.items()
    }
    return positions, Commit(
        installed_levels,
        dict(batch.reservations),
        versions,
        notification_ids[0],
        notification_ids[-1],
        {key: policy for key, (policy, _) in batch.policies.items()},
    )


@dataclass(slots=True)
class OneStatement:
    """A batch decided from memory and encoded as one statement's arguments."""

    work: Work
    pending: list[Pending]
    positions: list[int]  # each entry's event position
    committed: Commit
    collected: dict[str, str]  # the bulk inserts, by name, as JSON rows

    @property
    def head(self) -> int:
        return self.work.head

    @property
    def last_position(self) -> int:
        """The log's head once the batch has committed: its last notification id."""
        return self.committed.head


def encode_one_statement(
    recorder: LedgerRecorder, work: Work, pending: list[Pending], recorded_at: str
) -> OneStatement:
    """The inserts `insert` would run, collected instead of run (see PostgresLedgerRecorder)."""
    tx = SqlTx(None, qmark=False, collected={})
    positions, committed = insert(recorder, tx, work, recorded_at)
    assert tx.collected is not None
    return OneStatement(work, pending, positions, committed, tx.collected)
