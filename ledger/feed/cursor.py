"""Where the feed has published up to: one row per feed in `ledger_feed_cursors`, moved only after
the broker acknowledged a round, so that a new publisher (after a restart, or on another instance)
goes on from there. Not a projection: `ledger rebuild` and `ledger verify` leave it alone, and
positions survive a rebuild unchanged. Its table is made by migration 10
(ledger/storage/migrations.py)."""

from __future__ import annotations

from typing import Any


class FeedCursor:
    """The position one feed has published up to, in the ledger's database."""

    def __init__(self, recorder: Any, feed: str) -> None:
        self.recorder = recorder
        self.feed = feed

    def load(self) -> int:
        """The position published up to; 0 (the start of the log) for a feed never published."""
        with self.recorder.read_transaction() as tx:
            row = tx.fetchone("SELECT position FROM ledger_feed_cursors WHERE feed = %s", (self.feed,))
        return int(row["position"]) if row else 0

    def save(self, position: int) -> None:
        with self.recorder.plain_transaction() as tx:
            tx.execute(
                "INSERT INTO ledger_feed_cursors (feed, position) VALUES (%s, %s) "
                "ON CONFLICT (feed) DO UPDATE SET position = excluded.position "
                # Never back: a publisher that lost the lock late must not undo its successor's.
                "WHERE ledger_feed_cursors.position < excluded.position",
                (self.feed, position),
            )
