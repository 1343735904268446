"""PostgreSQL: the hint bits of the rows a page of the fill wrote, set just after its commit.

The first reader of a row after its transaction committed marks the row so (its hint bits), so
that later readers need not look the transaction up. With data checksums on (the default of a
cluster that PostgreSQL 18's initdb makes) or `wal_log_hints`, the first such mark on a page after
a checkpoint writes the whole page into the WAL. Left to the index builds, that is nearly every
page of the shadow tables, since the fill's own WAL starts checkpoints: measured at 1,000,000
events, the index builds wrote 1,603-1,694 MB of WAL without the marks and 769-856 MB with them
(bench/README.md, the rebuild: Session 38). Read right after its commit, a page has nearly always been written
since the last checkpoint began, and its marks write nothing to the WAL.

A page's rows start in the block where the same process's last page ended (a server process fills
the last block it wrote before it takes a new one, and keeps the blocks it added ahead for
itself) and end before the table's size after them: the blocks between are one TID range scan
(PostgreSQL 14 and later; on an earlier server the rows are left to the index builds). The scan
marks what it finds committed, the other process's rows included, and tells where this page's
rows ended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger.sql import SqlTx

TID_RANGE_SCANS_SINCE = 140000  # server_version_num


def hinting_supported(tx: SqlTx) -> bool:
    row = tx.fetchone("SELECT current_setting('server_version_num')::int AS version")
    return row is not None and row["version"] >= TID_RANGE_SCANS_SINCE


class FreshBlocks:
    """One process's pages of rows added to `tables`, each marked after its commit."""

    def __init__(self, tables: Sequence[str]) -> None:
        self.tables = tuple(tables)
        self._from = dict.fromkeys(self.tables, 0)  # per table: the block where the last page ended

    def written(self, tx: SqlTx, write: Callable[[SqlTx], None]) -> Callable[[SqlTx], None]:
        """Runs `write` (which adds rows to the tables) in `tx`, and returns what marks its rows,
        to run in a transaction after `tx` commits."""
        write(tx)
        sizes = ", ".join(
            f"pg_relation_size('{table}') / current_setting('block_size')::int AS b{i}"
            for i, table in enumerate(self.tables)
        )
        row = tx.fetchone(f"SELECT pg_current_xact_id()::text AS xid, {sizes}")
        assert row is not None
        xid = int(row["xid"]) % 2**32  # a row's xmin: the transaction id without its epoch
        ends = [int(row[f"b{i}"]) for i in range(len(self.tables))]

        def mark(tx: SqlTx) -> None:
            for table, end in zip(self.tables, ends, strict=True):
                start = self._from[table]
                if end <= start:
                    continue
                found = tx.fetchone(
                    f"SELECT max(ctid) FILTER (WHERE xmin = %s::text::xid)::text AS last FROM {table} "
                    f"WHERE ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid",
                    (str(xid),),
                )
                if found is not None and found["last"] is not None:  # "(block,item)"
                    self._from[table] = int(found["last"].strip("()").split(",")[0])

        return mark
