"""The writer's log lines name the HTTP requests of the batch they were logged for
(`request_ids`): set around each step of a batch, read only when a line is written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ledger.telemetry.request_ids import BATCH_REQUEST_IDS
from ledger.writer.submission import Submission


@contextmanager
def batch_logged(batch: Sequence[Submission]) -> Iterator[None]:
    token = BATCH_REQUEST_IDS.set(lambda: [s.request_id for s in batch if s.request_id is not None])
    try:
        yield
    finally:
        BATCH_REQUEST_IDS.reset(token)
