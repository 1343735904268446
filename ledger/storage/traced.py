"""The writer's database calls as spans (tracing on): a recorder that wraps the writer's own and
makes a span of each call the writer's batches make, a child of the batch's span (a call made
outside any span, such as the expiry check every interval, makes none).

Wrapped only when tracing is on (`traced_recorder`), so that with it off the writer calls its
recorder directly. Only the writer's recorder: the readers' is handed to plugins that look at its
class (the adapters' console rows ask whether it is SQLite's)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ledger.sql import SqlTx
from ledger.storage.recorders import LedgerRecorder, LogEntry
from ledger.storage.sent_statements import SentBatch
from ledger.telemetry import tracing


def traced_recorder(recorder: Any) -> Any:
    """`recorder` itself with tracing off; else one whose calls make spans."""
    return recorder if tracing.active is None else TracedRecorder(recorder)


class _TracedSentBatch(SentBatch):
    """A one-statement batch on its way: its span ends once the server has answered."""

    def __init__(self, sent: SentBatch, span: Any) -> None:  # the sent batch's own state stays in it
        self._sent = sent
        self._span = span

    def wait(self) -> None:
        from ledger.telemetry.spans import failed

        try:
            self._sent.wait()
        except BaseException as error:
            failed(self._span, error)
            raise
        finally:
            self._span.end()


class TracedRecorder:
    def __init__(self, inner: LedgerRecorder) -> None:
        self.inner = inner
        self.head_sql = inner.head_sql
        self.one_statement_batches = inner.one_statement_batches
        self.system = "sqlite" if getattr(inner, "qmark", False) else "postgresql"

    def __getattr__(self, name: str) -> Any:
        # What makes no span (insert_entries, head, close, ...) is the inner recorder's own.
        return getattr(self.inner, name)

    def _span(self, operation: str) -> contextlib.AbstractContextManager[Any]:
        assert tracing.active is not None, "a traced recorder outlived its tracing"
        return tracing.active.within_current(
            f"db {operation}", {"db.system.name": self.system, "db.operation.name": operation}
        )

    def write_collected(self, collected: dict[str, str], head: int, last_position: int) -> None:
        with self._span("write_batch"):
            self.inner.write_collected(collected, head, last_position)

    def send_collected(self, collected: dict[str, str], head: int, last_position: int) -> SentBatch:
        assert tracing.active is not None, "a traced recorder outlived its tracing"
        span = tracing.active.start_span(
            "db write_batch_in_flight",
            attributes={"db.system.name": self.system, "db.operation.name": "write_batch_in_flight"},
        )
        try:
            sent = self.inner.send_collected(collected, head, last_position)
        except BaseException:
            span.end()
            raise
        return _TracedSentBatch(sent, span)

    @contextlib.contextmanager
    def write_transaction(self, *, bounded: bool = False) -> Iterator[SqlTx]:
        with self._span("write_transaction"), self.inner.write_transaction(bounded=bounded) as tx:
            yield tx

    @contextlib.contextmanager
    def read_transaction(
        self, *, bounded: bool = False, answer_wait_s: float | None = None
    ) -> Iterator[SqlTx]:
        with (
            self._span("read_transaction"),
            self.inner.read_transaction(bounded=bounded, answer_wait_s=answer_wait_s) as tx,
        ):
            yield tx

    @contextlib.contextmanager
    def snapshot_transaction(self, *, answer_wait_s: float | None = None) -> Iterator[SqlTx]:
        with (
            self._span("snapshot_transaction"),
            self.inner.snapshot_transaction(answer_wait_s=answer_wait_s) as tx,
        ):
            yield tx

    @contextlib.contextmanager
    def plain_transaction(self) -> Iterator[SqlTx]:
        with self._span("plain_transaction"), self.inner.plain_transaction() as tx:
            yield tx

    def log_page(self, after: int, stop: int, limit: int) -> list[LogEntry]:
        with self._span("log_page"):
            return self.inner.log_page(after, stop, limit)
