"""PostgreSQL: the rebuild that does not stop the ledger.

1. **Fill.** Shadow tables are made beside the live projections (ledger/rebuild/shadow.py) and
   filled from the log up to its head at the start, while the ledger goes on recording: the
   history and event keys a page at a time (on the loader's thread, so that the server inserts
   while the next page is replayed), every level, reservation and policy once at the end, as the
   replay left it. With `rebuild_processes` above 1 the stores are split, and other processes
   replay and fill theirs (ledger/rebuild/parts.py). The tables have no indexes yet; then each
   live index is made on its shadow, several at once, and the tables are analysed, while the
   other processes' replay states are joined to this one's.
2. **Catch up.** The replay goes on from where it stopped (the same state) to the log's new head,
   through the writer's own `write_batch` into the shadow tables, until it is within
   `rebuild_swap_entries_max` entries of the head.
3. **Swap.** Under the writers' lock (ledger/storage/writers_lock.py, as every batch takes it),
   and with the readers of the tables and of the views on them let finish first (at most
   `rebuild_swap_lock_wait_ms`, else the lock is let go and the catch-up goes on before the next
   attempt), the last entries are replayed and each shadow takes its live table's place, in one
   transaction. Writers wait only for this step. A live table whose columns or indexes changed
   meanwhile (a migration) fails the rebuild, the live tables unchanged.
4. The old tables are dropped.

Only one rebuild runs at a time on a database (an advisory lock, held on a connection of its own).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg

from ledger.cli_errors import CommandError
from ledger.projections.schema import PROJECTION_TABLES
from ledger.projections.tables import write_batch
from ledger.rebuild import parts, shadow
from ledger.rebuild.fill import SHADOWS, fill
from ledger.rebuild.limits import Progress, RebuildLimits, RebuildReport
from ledger.rebuild.replay import Replay, Stores
from ledger.sql import SqlTx
from ledger.storage.recorders import LogEntry, PostgresLedgerRecorder

REBUILD_LOCK_KEY = 0x1ED6E6  # a PostgreSQL advisory lock key of this service's own
# Seconds between two attempts at the swap when readers held the tables (the catch-up goes on).
SWAP_RETRY_PAUSE_S = 0.2
# Besides the rebuild lock's: a page read while the loader writes one (the fill). (The swap reads its
# last pages in its own transaction.)
PAGE_CONNECTIONS = 2


def connections_at_once(limits: RebuildLimits) -> int:
    """The connections of its recorder's pool that a rebuild holds at once: the rebuild lock's for
    the whole run, and beside it the index builds or `PAGE_CONNECTIONS`. A smaller pool made the
    second index build wait for a connection, and the rebuild failed past the pool's wait."""
    return 1 + max(limits.index_builds_at_once, PAGE_CONNECTIONS)


def rebuild_online(
    recorder: PostgresLedgerRecorder,
    limits: RebuildLimits,
    progress: Progress,
    open_recorder: parts.OpenRecorder | None = None,
) -> RebuildReport:
    """`open_recorder` (picklable) opens this database in another process: without it the fill
    runs in this process alone."""
    started = time.monotonic()
    report = RebuildReport()
    with _only_rebuild(recorder):
        with recorder.plain_transaction() as tx:
            shadow.drop_leftovers(tx, PROJECTION_TABLES)
            for table in PROJECTION_TABLES:
                shadow.create_shadow(tx, table)
        report.head = _head(recorder)
        split = parts.split_stores(recorder, limits.processes) if open_recorder is not None else []
        with parts.OtherParts(open_recorder, split[1:], report.head, limits) as others:
            replay = Replay(Stores(others.stores(), but=True) if split[1:] else None)

            def filling(phase: str, position: int, head: int) -> None:
                others.check()
                progress(phase, position, head)

            fill(recorder, replay, report.head, limits, filling)
            others.wait_filled()
            _index_and_analyse(recorder, limits, lambda: replay.join(others.states()))
        for attempt in range(1, limits.swap_attempts_max + 1):
            report.catch_up_rounds += _catch_up(recorder, replay, limits, progress)
            swapped_after = _swap(recorder, replay, limits, progress, report)
            if swapped_after is not None:
                report.swap_attempts = attempt
                break
            time.sleep(SWAP_RETRY_PAUSE_S)
        else:
            raise CommandError(
                f"the projections' readers kept them for {limits.swap_attempts_max} attempts of "
                f"{limits.swap_lock_wait_ms} ms: the live tables are unchanged; try again in a quieter moment"
            )
        with recorder.plain_transaction() as tx:
            shadow.drop_retired(tx, PROJECTION_TABLES)
    report.entries = replay.entries
    report.elapsed_s = time.monotonic() - started
    return report


@contextlib.contextmanager
def _only_rebuild(recorder: PostgresLedgerRecorder) -> Iterator[None]:
    with recorder.datastore.get_connection() as conn:
        taken = conn.execute("SELECT pg_try_advisory_lock(%s) AS taken", (REBUILD_LOCK_KEY,)).fetchone()
        if not taken or not taken["taken"]:
            raise CommandError("another `ledger rebuild` is running on this database")
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (REBUILD_LOCK_KEY,))


def _head(recorder: PostgresLedgerRecorder) -> int:
    """The log's head, committed: notification ids commit in order (the writers' lock), so every
    entry up to it is there and will never change."""
    with recorder.read_transaction() as tx:
        return recorder.head(tx)


def _index_and_analyse(
    recorder: PostgresLedgerRecorder, limits: RebuildLimits, meanwhile: Callable[[], None]
) -> None:
    """The shadow tables' indexes, built by the server while this process does `meanwhile`."""
    with recorder.read_transaction() as tx:
        builds = [
            shadow.shadow_index_statements(table, index)
            for table in PROJECTION_TABLES
            for index in shadow.indexes(tx, table)
        ]

    def build(statements: list[str]) -> None:
        with recorder.plain_transaction() as tx:
            tx.execute(f"SET LOCAL maintenance_work_mem = '{int(limits.index_memory_mb)}MB'")
            for statement in statements:
                tx.execute(statement)

    with ThreadPoolExecutor(limits.index_builds_at_once, thread_name_prefix="rebuild-index") as pool:
        started = [pool.submit(build, statements) for statements in builds]
        meanwhile()
        for done in started:
            done.result()
    with recorder.plain_transaction() as tx:
        for table in PROJECTION_TABLES:
            tx.execute(f"ANALYZE {shadow.shadow_of(table)}")


def _catch_up(
    recorder: PostgresLedgerRecorder, replay: Replay, limits: RebuildLimits, progress: Progress
) -> int:
    """Rounds of replay into the shadow tables until the head is near; returns how many."""
    rounds = 0
    while rounds < limits.catch_up_rounds_max:
        head = _head(recorder)
        if head - replay.position <= limits.swap_entries_max:
            break
        rounds += 1
        for page in replay.pages(recorder, head, limits.batch_entries):
            with recorder.plain_transaction() as tx:
                write_batch(tx, page.batch, SHADOWS)
            progress("catching up", page.position, head)
    return rounds


def _swap(
    recorder: PostgresLedgerRecorder,
    replay: Replay,
    limits: RebuildLimits,
    progress: Progress,
    report: RebuildReport,
) -> float | None:
    """The last entries and the swap, in one transaction under the writers' lock; None when the
    tables' readers did not let go in time, or one made a deadlock with the locks being taken
    (nothing was changed, the replay has not moved). A lock timeout or a deadlock once the locks
    are taken ends the rebuild: the replay has moved on by then."""
    with recorder.read_transaction() as tx:  # before the writers' lock: a round trip less under it
        lock_order = shadow.with_views(tx, shadow.lock_order(tx, PROJECTION_TABLES), PROJECTION_TABLES)
    asked = time.monotonic()
    locking = True
    try:
        with recorder.write_transaction() as tx:  # the writers' lock on the log, as every batch takes
            shadow.lock(tx, lock_order, limits.swap_lock_wait_ms)
            head = recorder.head(tx)  # waits for both locks (pipelined: their errors arrive here)
            locking = False
            for page in replay.pages(_LogInTransaction(recorder, tx), head, limits.batch_entries):
                write_batch(tx, page.batch, SHADOWS)
                report.entries_swapped += page.entries
                progress("swapping", page.position, head)
            for table in PROJECTION_TABLES:
                if not shadow.same_shape(tx, table):
                    raise CommandError(
                        f"{table} changed while it was rebuilt (a migration?): the live tables are "
                        "unchanged; run the rebuild again"
                    )
            shadow.swap(tx, PROJECTION_TABLES)
            report.head = head
    except Exception as error:
        if locking and (_lock_not_available(error) or _deadlock(error)):
            report.swap_waits += 1
            return None
        if _lock_not_available(error) or _deadlock(error):
            # Past the locks the replay has moved on, into a transaction now rolled back: another
            # attempt would go on from there, and swap in tables without those entries.
            raise CommandError(_given_up_past_the_locks(error)) from None
        raise
    report.writes_paused_s = time.monotonic() - asked
    return report.writes_paused_s


class _LogInTransaction:
    """The log's last pages, read in the swap's own transaction (PostgresLedgerRecorder.log_page_in
    says why)."""

    def __init__(self, recorder: PostgresLedgerRecorder, tx: SqlTx) -> None:
        self._recorder = recorder
        self._tx = tx

    def log_page(self, after: int, stop: int, limit: int) -> list[LogEntry]:
        return self._recorder.log_page_in(self._tx, after, stop, limit)


def _given_up_past_the_locks(error: BaseException) -> str:
    """The line for a lock wait or a deadlock that ended the swap once it held the tables. A
    deadlock's own text is lines of process ids and lock tags, of sessions gone by the time it is
    read; the server's log has them with their statements."""
    if _deadlock(error):
        what = (
            "the swap was cancelled in a deadlock with another session (the PostgreSQL server's log "
            "names it) after it replayed the last entries"
        )
    else:
        what = (
            "the swap waited past its lock wait (LEDGER_REBUILD_SWAP_LOCK_WAIT_MS) after it replayed "
            f"the last entries ({_psycopg_error(error)})"
        )
    return f"{what}: the live tables are unchanged; run the rebuild again"


def _lock_not_available(error: BaseException) -> bool:
    return isinstance(_psycopg_error(error), psycopg.errors.LockNotAvailable)


def _deadlock(error: BaseException) -> bool:
    """A reader of two tables in one transaction (the service's reads of one moment, a report) that
    held one the swap waited for, and then asked for one the swap held already: PostgreSQL cancels
    the swap, which began to wait first and so checks first. While it takes its locks, nothing is
    changed and the replay has not moved: the attempt is given up as after its lock wait (the
    reader then goes on), not the whole rebuild. Once they are taken it ends the rebuild, as a lock
    wait does then (another session in a lock the swap asks for after them, an operator's DDL, say)."""
    return isinstance(_psycopg_error(error), psycopg.errors.DeadlockDetected)


def _psycopg_error(error: BaseException) -> BaseException | None:
    """The library's datastore re-raises psycopg's errors as its own, with psycopg's as the cause."""
    return error if isinstance(error, psycopg.Error) else error.__cause__
