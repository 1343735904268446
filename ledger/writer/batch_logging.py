"""The writer's log lines name the HTTP requests of the batch they were logged for
(`request_ids`): set around each step of a batch, read only when a line is written. With tracing
on, each step also runs under the batch's span (batch_tracing.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ledger.telemetry import tracing
from ledger.telemetry.request_ids import BATCH_REQUEST_IDS
from ledger.writer.submission import Submission


@contextmanager
def batch_logged(batch: Sequence[Submission]) -> Iterator[None]:
    token = BATCH_REQUEST_IDS.set(lambda: [s.request_id for s in batch if s.request_id is not None])
    try:
        if tracing.active is None or not batch:
            yield
        else:
            with tracing.active.resumed(batch[0].trace_parent):
                yield
    finally:
        BATCH_REQUEST_IDS.reset(token)
