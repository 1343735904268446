"""`ledger rebuild` while the ledger goes on recording: nothing lost, nothing refused, the result
equal to a replay of the log from scratch.

On PostgreSQL the rebuild fills shadow tables while writes go on, catches up and swaps them in
under the writers' lock; here the replay waits, after each of its first pages, for more writes to
be acknowledged, so that entries recorded after the head it started from must be caught up. On
SQLite it holds the write lock throughout, and the writes wait for it (within their lock timeout).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from support import db
from support import events as ev
from support.ids import unique
from support.load import WritesUnderWay
from support.reservation_lines import recomputed_from, rows_of_index
from support.server import run_ledger_command

from integration.test_rebuild import _mixed_workload as mixed_workload
from integration.test_rebuild import _wait_for_expiry as wait_for_expiry
from ledger.rebuild import RebuildLimits, rebuild
from ledger.storage.opening import open_recorder

PAGE_ENTRIES = 20  # small pages: the fill has many, and writes land between them
PAGES_WAITED_FOR = 4  # fill pages after each of which the replay waits for more writes
WRITES_AFTER_SWAP = 30  # acknowledged after the rebuild: recorded into the new tables
SWAP_WATCH_S = 120.0  # how long the reader waits for a swap to wait for it
SWAP_WATCH_EVERY_S = 0.01  # well within the swap's lock wait below (200 ms)


def _rebuild_while_writing(
    database_url: str, writes: WritesUnderWay, limits: RebuildLimits, pages_waited_for: int
):
    opening = functools.partial(open_recorder, database_url, 4, 30, create_tables=False)
    recorder = opening()
    pages = 0

    def progress(phase: str, position: int, head: int) -> None:
        nonlocal pages
        pages += 1
        # The fill and the catch-up hold no lock: the ledger records meanwhile. (Under the swap's
        # lock, or SQLite's, it would wait for us.)
        if (phase == "filling" and pages <= pages_waited_for) or phase == "catching up":
            writes.wait_for(len(writes.acknowledged_so_far()) + 5)

    try:
        return rebuild(recorder, limits, progress, opening)  # the fill over processes, as the command's
    finally:
        recorder.close()


def test_a_rebuild_under_writes_loses_nothing_and_equals_a_replay(database_url, serve):
    server = serve(database_url, {"LEDGER_EXPIRY_INTERVAL_MS": "100"})
    shop, warehouse = unique("shop"), unique("wh")
    with server.client() as client:
        # Policies, channels, reservations shipped, released and expired: every projection has rows.
        mixed_workload(client, shop, warehouse)
        wait_for_expiry(client, shop, "R-expiring")
        with WritesUnderWay(client, unique("busy")) as writes:
            writes.wait_for(100)
            head_before = db.scalar(database_url, f"SELECT COUNT(*) AS n FROM {db.EVENTS_TABLE}")
            # One round of catch-up (the head has moved on by then), during which more writes land:
            # the swap has entries to replay under the lock.
            limits = RebuildLimits(batch_entries=PAGE_ENTRIES, swap_entries_max=1, catch_up_rounds_max=1)
            # (the fill has more pages than that: the log holds well over PAGES_WAITED_FOR pages)
            report = _rebuild_while_writing(database_url, writes, limits, PAGES_WAITED_FOR)
            acknowledged_by_the_swap = len(writes.acknowledged_so_far())
            writes.wait_for(acknowledged_by_the_swap + WRITES_AFTER_SWAP)
        acknowledged = writes.acknowledged_so_far()
    assert server.stop() is not None

    if database_url.startswith("postgresql"):
        assert report.head > head_before, "the rebuild caught up with writes made while it ran"
        assert report.catch_up_rounds == 1 and report.entries_swapped > 0
    # Nothing refused (WritesUnderWay fails on any answer but accepted or rejected), nothing lost:
    # every acknowledged event has its key and its history, before and after the swap.
    keys = {row["event_id"] for row in db.query(database_url, "SELECT event_id FROM ledger_event_keys")}
    assert set(acknowledged) <= keys
    # The projections, rebuilt under writes and then written on by the service, equal a replay.
    verified = run_ledger_command(database_url, "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    tables = db.dump_projections(database_url)
    assert rows_of_index(tables["ledger_reservation_lines"]) == recomputed_from(tables["ledger_reservations"])
    # Nothing of the rebuild is left behind.
    names = db.query(
        database_url,
        "SELECT name FROM sqlite_master"
        if database_url.startswith("sqlite")
        else "SELECT relname AS name FROM pg_class",
    )
    assert [row["name"] for row in names if row["name"].endswith(("__rebuild", "__retired"))] == []


def _release_after_a_swap_gave_up(database_url: str, reader, done: threading.Event) -> None:
    """The reader lets go once a swap has waited for it and given up (its lock request seen, then
    gone): however long the rebuild takes to get there."""
    waited = False
    deadline = time.monotonic() + SWAP_WATCH_S
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'ledger_levels'::regclass"
            ).fetchone()[0]
            if waiting:
                waited = True
            elif waited:
                break
            time.sleep(SWAP_WATCH_EVERY_S)
    reader.rollback()
    done.set()


def test_the_swap_waits_for_readers_without_holding_the_writers(postgres, serve):
    """A reader that keeps a projection table open: the swap lets the writers go after its lock
    wait and tries again, and succeeds once the reader is done."""
    database_url = postgres.create_database()
    server = serve(database_url)
    with server.client() as client:
        mixed_workload(client, unique("shop"), unique("wh"))
        reader = psycopg.connect(database_url)
        reader.execute("SELECT COUNT(*) FROM ledger_levels").fetchone()  # holds ACCESS SHARE until rollback
        done = threading.Event()
        released = threading.Thread(target=_release_after_a_swap_gave_up, args=(database_url, reader, done))
        with WritesUnderWay(client, unique("busy")) as writes:
            writes.wait_for(30)
            released.start()
            report = _rebuild_while_writing(
                database_url, writes, RebuildLimits(swap_lock_wait_ms=200, swap_attempts_max=100), 0
            )
            released.join(SWAP_WATCH_S)
            assert done.is_set()
            writes.wait_for(len(writes.acknowledged_so_far()) + 10)
        reader.close()
    assert server.stop() is not None
    assert report.swap_waits >= 1 and report.swap_attempts == report.swap_waits + 1
    verified = run_ledger_command(database_url, "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_reader_of_a_view_during_the_swap_waits_for_it_and_fails_nothing(postgres, serve, monkeypatch):
    """An operator's report on `ledger_totals` that comes while the swap holds the tables: the swap
    makes the view again, so it holds the view first; the reader waits for the swap, not the swap
    for the reader (which, waiting for the tables, made a deadlock and failed the whole rebuild)."""
    from ledger.rebuild import online

    database_url = postgres.create_database()
    server = serve(database_url)
    with server.client() as client:
        mixed_workload(client, unique("shop"), unique("wh"))
    assert server.stop() is not None
    totals: list[int] = []
    readers: list[threading.Thread] = []
    real_swap = online.shadow.swap

    def swap_with_a_reader_waiting(tx, tables) -> None:
        monkeypatch.setattr(online.shadow, "swap", real_swap)
        readers.append(threading.Thread(target=_read_totals, args=(database_url, totals)))
        readers[0].start()
        _until_waiting_on_a_lock(database_url, "ledger_totals")
        real_swap(tx, tables)

    monkeypatch.setattr(online.shadow, "swap", swap_with_a_reader_waiting)
    recorder = open_recorder(database_url, 4, 30, create_tables=False)
    try:
        rebuild(recorder, RebuildLimits(), None)
    finally:
        recorder.close()
    readers[0].join(SWAP_WATCH_S)
    assert totals and totals[0] > 0, totals
    verified = run_ledger_command(database_url, "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize(
    "migration",
    [
        "CREATE INDEX ledger_levels_by_on_hand ON ledger_levels (on_hand)",
        # Made again under its name on other columns: the swap put the old definition back.
        "DROP INDEX ledger_levels_by_on_hand; "
        "CREATE INDEX ledger_levels_by_on_hand ON ledger_levels (reserved)",
    ],
    ids=["made", "made again"],
)
def test_an_index_made_during_the_rebuild_fails_it_and_is_kept(postgres, serve, monkeypatch, migration):
    """A migration (an index, built while writes go on) that ran after the shadow's indexes were
    made: the swap would have had no index to give its name, or the shadow's index of the old
    definition. The rebuild fails, in one line, and the live tables keep their indexes as they are."""
    from ledger.cli_errors import CommandError
    from ledger.rebuild import online

    database_url = postgres.create_database()
    server = serve(database_url)
    with server.client() as client:
        mixed_workload(client, unique("shop"), unique("wh"))
    assert server.stop() is not None
    if migration.startswith("DROP"):  # the index was there when the rebuild began
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE INDEX ledger_levels_by_on_hand ON ledger_levels (on_hand)")
    kept = db.dump_projections(database_url)
    real_lock = online.shadow.lock

    def migrated_first(tx, names, wait_ms) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for statement in migration.split("; "):
                conn.execute(statement)
        real_lock(tx, names, wait_ms)

    monkeypatch.setattr(online.shadow, "lock", migrated_first)
    recorder = open_recorder(database_url, 4, 30, create_tables=False)
    try:
        with pytest.raises(CommandError, match="ledger_levels changed while it was rebuilt"):
            rebuild(recorder, RebuildLimits(), None)
    finally:
        recorder.close()
    assert db.dump_projections(database_url) == kept
    with psycopg.connect(database_url) as conn:
        made = conn.execute("SELECT pg_get_indexdef('ledger_levels_by_on_hand'::regclass)").fetchone()[0]
    assert made.endswith("(on_hand)" if migration.startswith("CREATE") else "(reserved)"), made


def _read_totals(database_url: str, totals: list[int]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        totals.append(conn.execute("SELECT COUNT(*) FROM ledger_totals").fetchone()[0])


def _until_waiting_on_a_lock(database_url: str, query_text: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + SWAP_WATCH_S
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (f"%{query_text}%",),
        ).fetchall():
            assert time.monotonic() < deadline, "the reader never waited for the swap"
            time.sleep(SWAP_WATCH_EVERY_S)


READER_DEADLOCK_CHECK = "-c deadlock_timeout=10s"  # the reader's own check: long after the swap's


def test_a_reader_of_two_tables_costs_the_swap_an_attempt_not_the_whole_rebuild(postgres):
    """A reader that reads two projection tables in one transaction (the service's reads of one
    moment, an operator's report) and holds the first when the swap comes: the swap
    takes the tables before it in its order and waits for it; the reader asks for one of those and
    waits for the swap. PostgreSQL found the circle at the swap's deadlock check (it began to wait
    first) and cancelled it: the whole rebuild failed, after its fill ("deadlock detected").
    Nothing was changed yet, so the swap now gives up that attempt, as after its lock wait."""
    from ledger.projections.schema import PROJECTION_TABLES

    database_url = postgres.create_database()
    path_events = [ev.receipt(unique("shop"), ("A", 5)), ev.receipt(unique("shop"), ("B", 2))]
    _import(database_url, path_events)
    first, later = "ledger_levels", [table for table in PROJECTION_TABLES if table != "ledger_levels"]
    reader = psycopg.connect(database_url, options=READER_DEADLOCK_CHECK)
    reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    reader.execute(f"SELECT COUNT(*) FROM {first}").fetchone()  # holds ACCESS SHARE until the commit
    counted: list[int] = []

    def read_what_the_swap_holds() -> None:
        with psycopg.connect(database_url, autocommit=True) as watcher:
            held = _until_the_swap_waits_for(watcher, first, later)
        counted.append(reader.execute(f"SELECT COUNT(*) FROM {held}").fetchone()[0])
        reader.commit()

    second_read = threading.Thread(target=read_what_the_swap_holds)
    second_read.start()
    recorder = open_recorder(database_url, 4, 30, create_tables=False)
    try:
        report = rebuild(recorder, RebuildLimits(swap_lock_wait_ms=3000, swap_attempts_max=3), None)
    finally:
        recorder.close()
        second_read.join(SWAP_WATCH_S)
        reader.close()
    assert counted and counted[0] > 0, counted
    assert report.swap_waits == 1 and report.swap_attempts == 2, report
    verified = run_ledger_command(database_url, "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _import(database_url: str, events: list[dict]) -> None:
    import orjson

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.jsonl"
        path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
        imported = run_ledger_command(database_url, "import", "--quiet", str(path))
    assert imported.returncode == 0, imported.stderr


def _until_the_swap_waits_for(watcher: psycopg.Connection, held: str, others: list[str]) -> str:
    """Until a session waits for `held` while it holds (ACCESS EXCLUSIVE) some of `others`; one of
    those."""
    deadline = time.monotonic() + SWAP_WATCH_S
    while True:
        holding = watcher.execute(
            "SELECT holds.relation::regclass::text FROM pg_locks waits JOIN pg_locks holds "
            "ON holds.pid = waits.pid WHERE NOT waits.granted AND waits.relation = %s::regclass "
            "AND holds.granted AND holds.relation = ANY(%s::regclass[]) "
            "AND holds.mode = 'AccessExclusiveLock' ORDER BY 1",
            (held, others),
        ).fetchall()
        if holding:
            return str(holding[0][0])
        assert time.monotonic() < deadline, f"the swap never waited for {held} holding another"
        time.sleep(SWAP_WATCH_EVERY_S)


def test_one_rebuild_at_a_time(postgres):
    database_url = postgres.create_database()
    recorder = open_recorder(database_url, 4, 30)
    holder = psycopg.connect(database_url, autocommit=True)
    try:
        from ledger.rebuild.online import REBUILD_LOCK_KEY

        holder.execute("SELECT pg_advisory_lock(%s)", (REBUILD_LOCK_KEY,))
        refused = run_ledger_command(database_url, "rebuild", "--quiet")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines() == [
            "ledger rebuild: another `ledger rebuild` is running on this database"
        ], refused.stderr
    finally:
        holder.close()
        recorder.close()


def test_the_swap_locks_the_tables_in_the_reverse_of_autovacuums_order(postgres):
    """An autovacuum worker cancelled on one table (the swap waits for it) moves on to the next in
    its list, the order of a scan of pg_class: locked in that order, the swap would meet it again
    at every table, one deadlock_timeout each, with the writers waiting. Locked in the reverse
    order, the tables after it are already the swap's."""
    from ledger.projections.schema import PROJECTION_TABLES
    from ledger.rebuild import shadow

    database_url = postgres.create_database()
    recorder = open_recorder(database_url, 2, 30)
    try:
        with recorder.plain_transaction() as tx:
            for table in PROJECTION_TABLES:
                shadow.create_shadow(tx, table)
        with recorder.read_transaction() as tx:
            order = shadow.lock_order(tx, PROJECTION_TABLES)
    finally:
        recorder.close()
    wanted = {name for table in PROJECTION_TABLES for name in (table, shadow.shadow_of(table))}
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_bitmapscan = off")
        scanned = [row[0] for row in conn.execute("SELECT relname FROM pg_class") if row[0] in wanted]
    assert sorted(order) == sorted(wanted)
    assert order == scanned[::-1]


def test_the_rebuilt_tables_keep_their_owner_and_every_grant(postgres):
    """A rebuild run by another role than the tables' owner (a superuser's URL, the DBA's) made
    tables that role owned and nobody else could use: the service's own role, their owner until
    then, was refused every write after the swap ("permission denied for table ledger_levels"), and
    a report's role its SELECT (found by review)."""
    from urllib.parse import urlsplit, urlunsplit

    from ledger.projections.schema import PROJECTION_TABLES

    admin_url = postgres.create_database()
    owner, reader = unique("owner").replace("-", "_"), unique("report").replace("-", "_")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {owner} LOGIN")
        admin.execute(f"CREATE ROLE {reader} LOGIN")
        admin.execute(f"GRANT ALL ON SCHEMA public TO {owner}")
    parts = urlsplit(admin_url)
    owner_url = urlunsplit(parts._replace(netloc=f"{owner}@{parts.netloc.split('@', 1)[1]}"))
    made = run_ledger_command(owner_url, "migrate")  # the service's role makes the schema
    assert made.returncode == 0, made.stderr
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(f"GRANT SELECT ON ledger_levels TO {reader}")

    rebuilt = run_ledger_command(admin_url, "rebuild", "--quiet")  # as the superuser
    assert rebuilt.returncode == 0, rebuilt.stderr

    with psycopg.connect(admin_url) as conn:
        owners = dict(
            conn.execute(
                "SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relname = ANY(%s)",
                (list(PROJECTION_TABLES),),
            ).fetchall()
        )
    assert owners == dict.fromkeys(PROJECTION_TABLES, owner)
    with psycopg.connect(owner_url) as conn:  # the service's role writes on
        conn.execute("DELETE FROM ledger_levels WHERE store_id = 'none'")
    reader_url = urlunsplit(parts._replace(netloc=f"{reader}@{parts.netloc.split('@', 1)[1]}"))
    with psycopg.connect(reader_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger_levels").fetchone() == (0,)


def test_the_rebuild_never_waits_on_its_own_pool(postgres, monkeypatch):
    """`ledger rebuild` with LEDGER_DB_POOL_SIZE=2 (allowed): the rebuild lock holds one connection
    throughout, so the second index build (or the fill's page read beside its loader) waited in the
    pool, and past the pool's wait the rebuild failed after the whole fill. Here each index build
    first waits on the server for a lock this test holds, and the test lets go once as many
    connections were asked for as the rebuild holds at once: none of them may have had to wait."""
    from ledger.cli import main
    from ledger.rebuild import online
    from ledger.storage.pg_sessions import LedgerPostgresDatastore

    database_url = postgres.create_database()
    open_recorder(database_url, 2, 30).close()  # the schema
    gate = 0x7E57  # an advisory lock key of this test's own
    asked = threading.Condition()
    outstanding: dict[int, int] = {}  # per pool: connections asked for and not yet given back
    over: list[tuple[int, int]] = []  # (asked at once, the pool's size), where the first was larger
    real_get_connection = LedgerPostgresDatastore.get_connection
    real_statements = online.shadow.shadow_index_statements

    @contextlib.contextmanager
    def counted(self):
        with asked:
            outstanding[id(self)] = outstanding.get(id(self), 0) + 1
            if outstanding[id(self)] > self.pool.max_size:
                over.append((outstanding[id(self)], self.pool.max_size))
            asked.notify_all()
        try:
            with real_get_connection(self) as conn:
                yield conn
        finally:
            with asked:
                outstanding[id(self)] -= 1

    def gated(table, index):
        return [f"SELECT pg_advisory_xact_lock_shared({gate})", *real_statements(table, index)]

    monkeypatch.setattr(LedgerPostgresDatastore, "get_connection", counted)
    monkeypatch.setattr(online.shadow, "shadow_index_statements", gated)
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_DB_POOL_SIZE", "2")
    monkeypatch.setenv("LEDGER_REBUILD_PROCESSES", "1")
    at_once = RebuildLimits().index_builds_at_once + 1  # the builds and the rebuild lock
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (gate,))

        def let_go() -> None:
            with asked:  # a bound only so that a broken rebuild cannot hang the test
                asked.wait_for(lambda: max(outstanding.values(), default=0) >= at_once, SWAP_WATCH_S)
            holder.execute("SELECT pg_advisory_unlock(%s)", (gate,))

        releaser = threading.Thread(target=let_go)
        releaser.start()
        try:
            assert main(["rebuild", "--quiet"]) == 0
        finally:
            releaser.join()
    assert over == []


HELD_KEY = 0x7E58  # an advisory lock key of this test's own: what the swap's transaction waits for


def test_a_lock_timeout_after_the_swap_replayed_its_pages_fails_the_rebuild_rather_than_lose_them(postgres):
    """The swap replays the last entries into the shadow tables inside its transaction, moving the
    replay on; a lock timeout after that (its lock_timeout, `rebuild_swap_lock_wait_ms`, bounds
    every statement of the transaction) was taken for readers that kept the tables, and the next
    attempt went on from where the rolled-back one had left the replay: the tables swapped in
    lacked those entries, and the rebuild said it succeeded. Here the swap, once its pages are
    written, waits for a lock another session holds: a lock timeout as any other."""

    from ledger.cli_errors import CommandError
    from ledger.rebuild import online

    database_url = postgres.create_database()
    shop = unique("shop")

    _import(database_url, [ev.receipt(shop, ("A", 5)), ev.sale(shop, ("A", 1))])
    real_catch_up, real_swap = online._catch_up, online.shadow.swap
    written_during_the_rebuild: list[int] = []

    def catch_up_after_writes(recorder, replay, limits, progress) -> int:
        if not written_during_the_rebuild:  # entries the swap replays under its lock
            _import(database_url, [ev.receipt(shop, ("A", 7)), ev.receipt(shop, ("B", 3))])
            written_during_the_rebuild.append(2)
        return real_catch_up(recorder, replay, limits, progress)

    def swap_after_a_lock_timeout(tx, tables) -> None:
        monkeypatch.setattr(online.shadow, "swap", real_swap)
        with psycopg.connect(database_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (HELD_KEY,))
            tx.execute("SELECT pg_advisory_xact_lock(%s)", (HELD_KEY,))
            tx.fetchone("SELECT 1 AS answered")  # pipelined: the wait's error arrives here
        real_swap(tx, tables)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(online, "_catch_up", catch_up_after_writes)
    monkeypatch.setattr(online.shadow, "swap", swap_after_a_lock_timeout)
    recorder = open_recorder(database_url, 4, 30, create_tables=False)
    refused = ""
    try:
        rebuild(recorder, RebuildLimits(swap_lock_wait_ms=200), None)
    except CommandError as error:
        refused = error.message
    finally:
        recorder.close()
        monkeypatch.undo()
    assert written_during_the_rebuild
    verified = run_ledger_command(database_url, "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "after it replayed the last entries" in refused and "live tables are unchanged" in refused, refused
    assert (
        db.scalar(
            database_url, f"SELECT on_hand AS n FROM ledger_levels WHERE store_id = '{shop}' AND sku = 'B'"
        )
        == 3
    )


OTHER_DEADLOCK_CHECK = "-c deadlock_timeout=10s"  # the other session's check: long after the swap's
DEADLOCK_KEY = 0x7E59  # an advisory lock key of this test's own: what the swap asks for, held by the other


def _live_tables(database_url: str) -> dict[str, int]:
    """Each projection table's oid: a swap gives every one a new one."""
    from ledger.projections.schema import PROJECTION_TABLES

    rows = db.query(
        database_url,
        "SELECT relname, oid::bigint AS oid FROM pg_class WHERE relname = ANY(%s)",
        (list(PROJECTION_TABLES),),
    )
    return {row["relname"]: row["oid"] for row in rows}


def _shadow_tables(database_url: str) -> list[str]:
    rows = db.query(
        database_url,
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %s",
        ("%\\_\\_rebuild",),
    )
    return sorted(row["relname"] for row in rows)


class _DeadlockInTheSwap:
    """Once the swap's transaction has replayed the last entries, another session takes what the
    swap then asks for (an advisory lock) and waits for a table the swap holds: a deadlock, which
    PostgreSQL ends at the swap's check (the other's `deadlock_timeout` is far longer)."""

    def __init__(self, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from ledger.rebuild import online

        self._database_url = database_url
        self._monkeypatch = monkeypatch
        self._online = online
        self._real_swap = online.shadow.swap
        self._other = psycopg.connect(database_url, autocommit=True, options=OTHER_DEADLOCK_CHECK)
        self.reads: list[threading.Thread] = []
        monkeypatch.setattr(online.shadow, "swap", self._swap)

    def _swap(self, tx, tables) -> None:
        self._monkeypatch.setattr(self._online.shadow, "swap", self._real_swap)
        self._other.execute("SELECT pg_advisory_lock(%s)", (DEADLOCK_KEY,))
        read = "SELECT COUNT(*) AS in_a_deadlock FROM ledger_history"  # waits for the swap's lock
        self.reads.append(threading.Thread(target=self._other.execute, args=(read,)))
        self.reads[0].start()
        _until_waiting_on_a_lock(self._database_url, "in_a_deadlock")
        tx.execute("SELECT pg_advisory_xact_lock(%s)", (DEADLOCK_KEY,))
        tx.fetchone("SELECT 1 AS answered")  # pipelined: the wait's error arrives here
        self._real_swap(tx, tables)

    def close(self) -> None:
        for read in self.reads:
            read.join(SWAP_WATCH_S)  # the other session's read, once the swap let go
        self._other.close()


def test_a_deadlock_after_the_swap_replayed_its_pages_ends_the_rebuild_in_one_line(
    postgres, monkeypatch, capsys
):
    """The swap holds the tables and has replayed the last entries when its transaction waits for a
    session that waits for one of those tables: PostgreSQL ends the deadlock by cancelling the swap
    (its check comes first, at the ledger's `deadlock_timeout`). The command said the database could
    not be used, with psycopg's text ("cannot use the database at …: deadlock detected DETAIL:
    Process … waits for …"). As after a lock timeout there, the replay has moved on: the rebuild
    ends in a line of its own, exit 2, nothing swapped, its shadow tables left for the next rebuild,
    which drops them and succeeds."""
    from ledger.cli import main
    from ledger.projections.schema import PROJECTION_TABLES
    from ledger.rebuild import online
    from ledger.rebuild.shadow import shadow_of

    database_url = postgres.create_database()
    shop = unique("shop")
    _import(database_url, [ev.receipt(shop, ("A", 5)), ev.sale(shop, ("A", 1))])
    live_before = _live_tables(database_url)
    real_catch_up = online._catch_up
    written_during_the_rebuild: list[int] = []

    def catch_up_after_writes(recorder, replay, limits, progress) -> int:
        if not written_during_the_rebuild:  # entries the swap replays under its lock
            _import(database_url, [ev.receipt(shop, ("A", 7)), ev.receipt(shop, ("B", 3))])
            written_during_the_rebuild.append(2)
        return real_catch_up(recorder, replay, limits, progress)

    monkeypatch.setattr(online, "_catch_up", catch_up_after_writes)
    deadlock = _DeadlockInTheSwap(database_url, monkeypatch)
    for name in [name for name in os.environ if name.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_REBUILD_PROCESSES", "1")
    monkeypatch.setenv("LEDGER_REBUILD_SWAP_LOCK_WAIT_MS", "3000")  # past the swap's deadlock check
    try:
        code = main(["rebuild", "--quiet"])
    finally:
        deadlock.close()
        monkeypatch.undo()
    err = capsys.readouterr().err
    assert written_during_the_rebuild and deadlock.reads
    assert code == 2, err
    [line] = err.splitlines()
    assert line.startswith("ledger rebuild: the swap was cancelled in a deadlock with another session"), line
    assert "live tables are unchanged" in line and "run the rebuild again" in line, line
    assert "DETAIL" not in line and "cannot use the database" not in line, line
    assert _live_tables(database_url) == live_before  # nothing swapped
    # Left for the next rebuild, as after a lock timeout there.
    assert _shadow_tables(database_url) == sorted(shadow_of(table) for table in PROJECTION_TABLES)
    level_of_b = f"SELECT on_hand AS n FROM ledger_levels WHERE store_id = '{shop}' AND sku = 'B'"
    assert db.scalar(database_url, level_of_b) == 3  # the live tables took the writes meanwhile

    again = run_ledger_command(database_url, "rebuild", "--quiet")
    assert again.returncode == 0, again.stderr
    assert _shadow_tables(database_url) == []
    verified = run_ledger_command(database_url, "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr


SWAP_HELD_S_MAX = 20.0  # how long this test lets the swap hold the log (it takes well under a second)


def test_a_request_to_lock_the_whole_log_during_the_swap_waits_for_it_and_holds_nothing(
    postgres, monkeypatch
):
    """An operator's statement that locks the whole log (VACUUM FULL, ALTER TABLE: ACCESS EXCLUSIVE)
    queued while the swap held the log's writers' lock, ROW EXCLUSIVE. The swap then read its last
    entries on another connection, whose read queued behind the operator's request, which waited for
    the swap: PostgreSQL saw no deadlock (the swap's wait was its client's), and the swap, and every
    write, waited until the operator's statement gave up (none does by default). The swap reads
    them in its own transaction, which the server lets ahead of the request it holds up."""
    from ledger.rebuild import online

    database_url = postgres.create_database()
    shop = unique("shop")
    _import(database_url, [ev.receipt(shop, ("A", 5))])
    real_catch_up, real_lock = online._catch_up, online.shadow.lock
    written_during_the_rebuild: list[int] = []
    operator = psycopg.connect(database_url)  # in a transaction, as LOCK TABLE must be
    operator_got: list[float] = []

    def catch_up_after_writes(recorder, replay, limits, progress) -> int:
        if not written_during_the_rebuild:  # entries the swap replays under its lock
            _import(database_url, [ev.receipt(shop, ("B", 3))])
            written_during_the_rebuild.append(1)
        return real_catch_up(recorder, replay, limits, progress)

    def locked_then_the_whole_log_asked_for(tx, names, wait_ms) -> None:
        real_lock(tx, names, wait_ms)
        tx.fetchone("SELECT 1 AS locked")  # the swap holds the log and the tables now

        def lock_the_log() -> None:
            operator.execute(f"LOCK TABLE {db.EVENTS_TABLE} IN ACCESS EXCLUSIVE MODE")
            operator_got.append(time.monotonic())

        threading.Thread(target=lock_the_log, daemon=True).start()
        with psycopg.connect(database_url, autocommit=True) as watcher:
            deadline = time.monotonic() + SWAP_WATCH_S
            while not watcher.execute(
                "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = %s::regclass", (db.EVENTS_TABLE,)
            ).fetchall():
                assert time.monotonic() < deadline, "the operator's lock request never waited for the swap"
                time.sleep(SWAP_WATCH_EVERY_S)

    monkeypatch.setattr(online, "_catch_up", catch_up_after_writes)
    monkeypatch.setattr(online.shadow, "lock", locked_then_the_whole_log_asked_for)
    recorder = open_recorder(database_url, 4, 30, create_tables=False)
    reports: list[object] = []
    rebuilding = threading.Thread(target=lambda: reports.append(rebuild(recorder, RebuildLimits(), None)))
    try:
        rebuilding.start()
        rebuilding.join(SWAP_HELD_S_MAX)
        finished = not rebuilding.is_alive()
    finally:
        operator.cancel()  # a swap that waits for it is let go, so that the test ends
        rebuilding.join(SWAP_WATCH_S)
        operator.close()
        recorder.close()
    assert written_during_the_rebuild
    assert finished, f"the swap held the log for {SWAP_HELD_S_MAX:.0f} s behind the operator's request"
    assert operator_got, "the operator's request got its lock once the swap was done"
    assert reports and reports[0].entries_swapped > 0, reports
    verified = run_ledger_command(database_url, "verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr
