"""`ledger rebuild`'s fill marks the rows it adds committed while their pages are fresh
(ledger/rebuild/hints.py): left to the index builds, the marks would write nearly every page of
the shadow tables into the WAL once more, where data checksums are on (PostgreSQL 18's default)."""

from __future__ import annotations

import psycopg
from support import api
from support import events as ev
from support.ids import unique

from ledger.projections.schema import PROJECTION_TABLES
from ledger.projections.tables import APPENDED_TABLES
from ledger.rebuild import RebuildLimits, hints, shadow
from ledger.rebuild.fill import fill
from ledger.rebuild.replay import Replay
from ledger.storage.opening import open_recorder

HEAP_XMIN_COMMITTED = 0x0100  # PostgreSQL's htup_details.h: the inserting transaction committed
MISSED_AT_MOST = 50  # of a table's rows, the marks may miss 1 in this many (best effort)
POOL_SIZE = 8  # the rebuild's (LEDGER_DB_POOL_SIZE's default): pages go to several server processes

# Every row of a table's pages, marked or not (pageinspect reads the pages as they are, and marks
# nothing itself).
_UNMARKED_ROWS = """SELECT count(*) FILTER (WHERE (t_infomask & %(committed)s) = 0) AS unmarked,
        count(*) AS rows
    FROM generate_series(0, pg_relation_size(%(table)s::text) / current_setting('block_size')::int - 1) AS b,
        LATERAL heap_page_items(get_raw_page(%(table)s::text, b::int))
    WHERE lp_flags = 1"""


def _ledger(postgres, serve) -> str:
    database_url = postgres.create_database()
    server = serve(database_url)
    stores = [unique("s1"), unique("s2")]
    with server.client() as client:
        for round_ in range(30):
            for store in stores:
                api.record(client, ev.receipt(store, ("A", 5), ("B", 5), (f"C{round_}", 1)))
                api.record(client, ev.reservation(store, f"R{round_}", ("A", 1)))
                if round_ % 3 == 0:  # marking codes (CONTRACT §10): rows of the codes table too
                    coded = {"sku": "B", "qty": 1, "codes": [f"0104601234567890215{store}{round_}"]}
                    api.record(client, ev.envelope("stock.sale", store, {"lines": [coded]}))
    assert server.stop() is not None
    return database_url


def _unmarked_after_a_fill(database_url: str) -> dict[str, tuple[int, int]]:
    """(unmarked rows, rows) of each appended shadow table just after a fill, before any index."""
    recorder = open_recorder(database_url, POOL_SIZE, 30, create_tables=False)
    try:
        with recorder.plain_transaction() as tx:
            shadow.drop_leftovers(tx, PROJECTION_TABLES)
            for table in PROJECTION_TABLES:
                shadow.create_shadow(tx, table)
        with recorder.read_transaction() as tx:
            head = recorder.head(tx)
        fill(recorder, Replay(), head, RebuildLimits(batch_entries=7), lambda *progress: None)
        counted: dict[str, tuple[int, int]] = {}
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
            for table in APPENDED_TABLES:
                params = {"table": shadow.shadow_of(table), "committed": HEAP_XMIN_COMMITTED}
                unmarked, rows = conn.execute(_UNMARKED_ROWS, params).fetchone()
                counted[table] = (unmarked, rows)
        with recorder.plain_transaction() as tx:
            shadow.drop_leftovers(tx, PROJECTION_TABLES)
        return counted
    finally:
        recorder.close()


def test_the_fill_leaves_every_row_it_added_marked_committed(postgres, serve, monkeypatch):
    database_url = _ledger(postgres, serve)
    counted = _unmarked_after_a_fill(database_url)
    assert all(rows >= 20 for _, rows in counted.values()), counted  # pages of 7 entries: many pages
    # Best effort (hints.py): a row the server put in free space of an earlier block may be missed.
    # None was, in every run here; a start block tracked per table instead of per server process
    # missed 10% of the keys.
    assert all(unmarked <= rows // MISSED_AT_MOST for unmarked, rows in counted.values()), counted

    # The control: without the marks the same fill leaves its rows unmarked, so the count above
    # can tell the two apart.
    monkeypatch.setattr(hints, "hinting_supported", lambda tx: False)
    unmarked = _unmarked_after_a_fill(database_url)
    assert all(count == rows > 0 for count, rows in unmarked.values()), unmarked
