"""Pages written to the database on a thread of their own, while the next ones are replayed.

The replay is Python's work and the insert is the server's: with the insert on this thread (which
waits on the socket without Python's interpreter lock), the two overlap on two cores. At most
`ahead_max` pages wait for it, so memory stays bounded whatever the log's size.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from types import TracebackType

from ledger.sql import SqlTx

# One page's writes. What they return, if anything, runs in a transaction of its own once they
# are committed (ledger/rebuild/hints.py).
AfterCommit = Callable[[SqlTx], None]
Write = Callable[[SqlTx], AfterCommit | None]
JOIN_TIMEOUT_S = 600.0  # the last page's insert; a database that takes longer is failing anyway


class PageLoader:
    """`put(write)` hands over one page's writes; each runs in a committed transaction of its own,
    and what it returns, if anything, in another after that one's commit."""

    def __init__(
        self, transaction: Callable[[], contextlib.AbstractContextManager[SqlTx]], ahead_max: int
    ) -> None:
        self._transaction = transaction
        self._pages: queue.Queue[Write | None] = queue.Queue(maxsize=ahead_max)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rebuild-loader", daemon=True)

    def __enter__(self) -> PageLoader:
        self._thread.start()
        return self

    def put(self, write: Write) -> None:
        while True:
            self._raise_error()
            try:
                self._pages.put(write, timeout=0.1)
                return
            except queue.Full:
                continue

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            self._error = self._error or error
        while self._thread.is_alive():
            try:
                self._pages.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(JOIN_TIMEOUT_S)
        assert not self._thread.is_alive(), "the rebuild's loader did not finish"
        if kind is None:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the shadow tables failed: {self._error}") from self._error

    def _run(self) -> None:
        while (write := self._pages.get()) is not None:
            if self._error is not None:
                continue  # drain: the replay is stopping
            try:
                with self._transaction() as tx:
                    after_commit = write(tx)
                if after_commit is not None:
                    with self._transaction() as tx:
                        after_commit(tx)
            except BaseException as error:  # noqa: BLE001 (handed to the replay's thread)
                self._error = error
