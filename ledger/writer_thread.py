"""The writer as a thread of this process: the embedded default for library use and tests.

`ledger serve` runs the writer in a process of its own instead (ledger/writer_process.py); the
guarantees are the same, only the speed differs.
"""

from __future__ import annotations

import asyncio

from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.writer import Writer


class ThreadWriterClient:
    def __init__(self, writer: Writer, timeout_s: float) -> None:
        self.writer = writer
        self.timeout_s = timeout_s

    def start(self) -> None:
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()

    @property
    def alive(self) -> bool:
        return self.writer.alive

    @property
    def commits_seen(self) -> int:
        return self.writer.batches_committed

    async def submit(self, events: list[StockEvent]) -> list[EventResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[EventResult]] = loop.create_future()

        def done(result: list[EventResult] | BaseException) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        self.writer.submit(events, done)
        return await asyncio.wait_for(future, self.timeout_s)

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        return self.writer.submit_and_wait(events, self.timeout_s)


def _settle(future: asyncio.Future[list[EventResult]], result: list[EventResult] | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
