"""The plain transactions beside the log may read before they write (a new token's name is checked
first). On SQLite in WAL mode, a transaction begun as a reader that another connection wrote past
cannot become a writer: SQLite refuses it at once with "database is locked", whatever the busy
timeout. `ledger tokens revoke` failed so beside a running service, whose workers note each token's
last use."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ledger.storage.database_urls import sqlite_file
from ledger.storage.opening import open_recorder

# How long the test lets the other connection's write go ahead of the plain transaction's: it
# finishes in milliseconds unless it waits for the plain transaction's lock (as it must).
OTHER_WRITE_HEAD_START_S = 1.0
OTHER_WRITE_LOCK_WAIT_S = 30.0


def test_a_plain_transaction_that_reads_first_still_writes_after_another_connection_wrote(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    recorder = open_recorder(database_url, 2, 30)
    path = sqlite_file(database_url)
    assert path is not None
    try:
        with recorder.plain_transaction() as tx:
            tx.execute("INSERT INTO ledger_feed_cursors (feed, position) VALUES (%s, %s)", ("other", 1))
        other_wrote = threading.Event()

        def other_write() -> None:
            other = sqlite3.connect(path, timeout=OTHER_WRITE_LOCK_WAIT_S, isolation_level=None)
            try:
                other.execute("UPDATE ledger_feed_cursors SET position = position + 1 WHERE feed = 'other'")
            finally:
                other.close()
            other_wrote.set()

        other = threading.Thread(target=other_write)
        with recorder.plain_transaction() as tx:
            assert tx.fetchone("SELECT position FROM ledger_feed_cursors WHERE feed = %s", ("mine",)) is None
            other.start()
            other_wrote.wait(OTHER_WRITE_HEAD_START_S)
            tx.execute("INSERT INTO ledger_feed_cursors (feed, position) VALUES (%s, %s)", ("mine", 7))
        other.join(OTHER_WRITE_LOCK_WAIT_S)
        assert other_wrote.is_set()
        with recorder.read_transaction() as tx:
            rows = tx.fetchall("SELECT feed, position FROM ledger_feed_cursors ORDER BY feed")
        assert [(row["feed"], row["position"]) for row in rows] == [("mine", 7), ("other", 2)]
    finally:
        recorder.close()
