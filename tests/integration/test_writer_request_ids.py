"""The writer as a thread (the embedded default) names the requests of its batch in its log lines,
and counts the batch for /metrics, as the writer process does (tests/e2e/test_observability.py).
On both databases."""

from __future__ import annotations

import asyncio
import logging

import pytest
from support import events as ev

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.telemetry.request_ids import BATCH_REQUEST_IDS, REQUEST_ID


def test_the_writer_thread_names_the_request_and_counts_the_batch(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = build_ledger(Settings(database_url=database_url, writer_process=False, writer_slow_batch_ms=0))
    ledger.start()
    seen: list[tuple[str, list[str]]] = []

    class Names(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            ids = BATCH_REQUEST_IDS.get()
            seen.append((record.getMessage(), [] if ids is None else list(ids())))

    handler = Names()
    logging.getLogger("ledger.writer").addHandler(handler)
    try:

        async def in_a_request() -> None:
            REQUEST_ID.set(b"thread-req-1")
            await ledger.writer.submit([ev.stock_event("e-1", "stock.receipt", "store-1", [("SKU-1", 3)])])

        with caplog.at_level(logging.WARNING, logger="ledger.writer"):
            asyncio.run(in_a_request())
        stats = ledger.writer.stats
    finally:
        logging.getLogger("ledger.writer").removeHandler(handler)
        ledger.stop()
    assert any("from taken to answered" in message and ids == ["thread-req-1"] for message, ids in seen), seen
    assert stats is not None and sum(stats.batch_events[0]) == 1 and stats.batch_events[1] == 1
