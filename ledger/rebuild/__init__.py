"""`ledger rebuild`: every projection made again from the event log alone.

`replay.py` streams the log through the writer's own rules (`ledger verify` uses it too);
`online.py` rebuilds a PostgreSQL ledger beside the live tables while it goes on recording, and
swaps the result in under the writers' lock for a moment (`shadow.py`: the tables; `fill.py`: the
replay's rows into them; `loading.py`: their inserts overlapped with the replay; `hints.py`: their
rows marked committed while fresh; `parts.py`: the fill spread over processes by store);
`locked.py` rebuilds a SQLite ledger in one write transaction.
"""

from __future__ import annotations

from ledger.rebuild.limits import Progress, RebuildLimits, RebuildReport
from ledger.rebuild.locked import rebuild_locked
from ledger.rebuild.online import rebuild_online
from ledger.rebuild.parts import OpenRecorder
from ledger.rebuild.replay import collection_paused
from ledger.storage.recorders import LedgerRecorder, PostgresLedgerRecorder

__all__ = ["Progress", "RebuildLimits", "RebuildReport", "collection_paused", "rebuild"]


def _no_progress(phase: str, position: int, head: int) -> None:
    return None


def rebuild(
    recorder: LedgerRecorder,
    limits: RebuildLimits | None = None,
    progress: Progress | None = None,
    open_recorder: OpenRecorder | None = None,
) -> RebuildReport:
    """`open_recorder` (picklable) opens the same database in another process, for a fill spread
    over `limits.processes` (PostgreSQL; without it the fill runs in this process alone)."""
    limits = limits or RebuildLimits()
    with collection_paused():
        if isinstance(recorder, PostgresLedgerRecorder):
            return rebuild_online(recorder, limits, progress or _no_progress, open_recorder)
        return rebuild_locked(recorder, limits, progress or _no_progress)
