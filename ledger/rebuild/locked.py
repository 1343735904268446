"""SQLite: the rebuild in one write transaction (writers wait until it ends).

SQLite has one write lock for the whole database, so shadow tables filled beside the live ones
would take it for every page anyway, and it cannot rename an index: the swap would have to build
every index again under the lock. The embedded database is for ledgers small enough that the
replay's seconds are the simpler price; PostgreSQL has the online rebuild (ledger/rebuild/online.py).
"""

from __future__ import annotations

import time

from ledger.projections.schema import PROJECTION_TABLES
from ledger.projections.tables import write_batch
from ledger.rebuild.limits import Progress, RebuildLimits, RebuildReport
from ledger.rebuild.replay import Replay
from ledger.storage.recorders import LedgerRecorder


def rebuild_locked(recorder: LedgerRecorder, limits: RebuildLimits, progress: Progress) -> RebuildReport:
    started = time.monotonic()
    report = RebuildReport(swap_attempts=1)
    replay = Replay()
    with recorder.write_transaction() as tx:
        report.head = recorder.head(tx)
        for table in PROJECTION_TABLES:
            tx.execute(f"DELETE FROM {table}")
        for page in replay.pages(recorder, report.head, limits.batch_entries):
            write_batch(tx, page.batch)
            progress("replaying", page.position, report.head)
    report.entries = replay.entries
    report.elapsed_s = report.writes_paused_s = time.monotonic() - started
    return report
