"""PostgreSQL: a replay's pages written into the shadow tables, up to a head.

The rows that only ever grow (history, marking codes, event keys) go a page at a time, on the
loader's thread (ledger/rebuild/loading.py), so that the server inserts while the next page is
replayed; every level, reservation and policy goes once at the end, as the replay left it. The
rebuild's own process fills this way, and so does each of its other processes
(ledger/rebuild/parts.py), each with the stores of its replay.
"""

from __future__ import annotations

from ledger.projections.schema import PROJECTION_TABLES
from ledger.projections.tables import (
    LatestRows,
    ProjectionBatch,
    write_appended,
    write_latest,
)
from ledger.rebuild import hints, shadow
from ledger.rebuild.limits import Progress, RebuildLimits
from ledger.rebuild.loading import AfterCommit, PageLoader
from ledger.rebuild.replay import Replay
from ledger.sql import SqlTx
from ledger.storage.recorders import PostgresLedgerRecorder

SHADOWS = {table: shadow.shadow_of(table) for table in PROJECTION_TABLES}


def fill(
    recorder: PostgresLedgerRecorder, replay: Replay, head: int, limits: RebuildLimits, progress: Progress
) -> None:
    latest = LatestRows()
    with recorder.plain_transaction() as tx:
        fresh = hints.FreshBlocks() if hints.hinting_supported(tx) else None

    def write_page(tx: SqlTx, batch: ProjectionBatch) -> AfterCommit | None:
        if fresh is None:
            write_appended(tx, batch, SHADOWS)
            return None
        return fresh.written(tx, lambda tx: write_appended(tx, batch, SHADOWS))

    with PageLoader(recorder.plain_transaction, limits.pages_ahead_max) as loader:
        for page in replay.pages(recorder, head, limits.batch_entries):
            latest.merge(page.batch)
            batch = page.batch
            loader.put(lambda tx, batch=batch: write_page(tx, batch))  # type: ignore[misc]
            progress("filling", page.position, head)
    progress("filling", replay.position, head)  # the last pages are in
    with recorder.plain_transaction() as tx:
        write_latest(
            tx, latest, SHADOWS, limits.batch_entries, lambda: progress("filling", replay.position, head)
        )
