"""PostgreSQL: the hint bits of the rows a page of the fill wrote, set just after its commit.

The first reader of a row after its transaction committed marks the row so (its hint bits), so
that later readers need not look the transaction up. With data checksums on (the default of a
cluster that PostgreSQL 18's initdb makes) or `wal_log_hints`, the first such mark on a page after
a checkpoint writes the whole page into the WAL. Left to the index builds, that is nearly every
page of the shadow tables, since the fill's own WAL starts checkpoints: measured at 1,000,000
events, the index builds wrote 1,603-1,694 MB of WAL without the marks and 769-856 MB with them
(bench/README.md, the rebuild: Session 38). Read right after its commit, a page has nearly always
been written since the last checkpoint began, and its marks write nothing to the WAL.

Best effort: a row the marks miss is marked by the index builds, as before. A server process
adds a table's rows in the block where its last rows went, then in new blocks: so a page's rows
are found from the block where the same server process's last page of that table ended (the
loader's connections are a pool's, several server processes) up to the table's size after them,
one TID range scan (PostgreSQL 14 and later; earlier servers are left to the index builds).
Rows the server put elsewhere (free space in an earlier block) are missed. So are rows whose
commit was not yet on disk when read (`synchronous_commit = off`): the server marks a row only
once its commit is.
A mark that fails fails the rebuild, as a page's write would: both are the same database's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger.rebuild.loading import AfterCommit
from ledger.sql import SqlTx

TID_RANGE_SCANS_SINCE = 140000  # server_version_num


def hinting_supported(tx: SqlTx) -> bool:
    row = tx.fetchone("SELECT current_setting('server_version_num')::int AS version")
    return row is not None and row["version"] >= TID_RANGE_SCANS_SINCE


class FreshBlocks:
    """One rebuild process's pages of added rows, each marked after its commit."""

    def __init__(self) -> None:
        # Per (server process, table): the block where that process's last rows of the table went.
        self._last_block: dict[tuple[int, str], int] = {}

    def written(self, tx: SqlTx, write: Callable[[SqlTx], Sequence[str]]) -> AfterCommit | None:
        """Runs `write` in `tx` (it adds rows to tables and names those it added to), and returns
        what marks them, to run in a transaction after `tx` commits (None: nothing to mark)."""
        tables = list(write(tx))
        if not tables:
            return None
        sizes = ", ".join(
            f"pg_relation_size(%s::regclass) / current_setting('block_size')::int AS b{i}"
            for i in range(len(tables))
        )
        row = tx.fetchone(
            f"SELECT pg_backend_pid() AS pid, pg_current_xact_id_if_assigned()::text AS xid, {sizes}", tables
        )
        assert row is not None
        if row["xid"] is None:
            return None
        pid = int(row["pid"])
        xid = int(row["xid"]) % 2**32  # a row's xmin: the transaction id without its epoch
        ends = [int(row[f"b{i}"]) for i in range(len(tables))]

        def mark(tx: SqlTx) -> None:
            for table, end in zip(tables, ends, strict=True):
                start = self._last_block.get((pid, table), 0)
                found = tx.fetchone(
                    "SELECT (max(ctid) FILTER (WHERE xmin = %s::text::xid)::text::point)[0]::bigint AS last "
                    f"FROM {table} WHERE ctid >= %s::tid AND ctid < %s::tid",
                    (str(xid), f"({start},0)", f"({end},0)"),
                )
                if found is not None and found["last"] is not None:
                    self._last_block[(pid, table)] = int(found["last"])

        return mark
