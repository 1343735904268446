"""The writer as a thread of this process: the embedded default for library use and tests.

`ledger serve` runs the writer in a process of its own instead (process.py); the guarantees are
the same, only the speed differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading

from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.telemetry.request_ids import current_request_id
from ledger.writer.batch_logging import batch_logged
from ledger.writer.batch_tracing import caller_trace_parent, traced
from ledger.writer.batching import drain_queue
from ledger.writer.facade import Writer
from ledger.writer.stats import WriterStats, WriterStatsSnapshot
from ledger.writer.submission import Done, Sent, Submission, WriterUnavailable, answered_now

STOP_WAIT_S = 10.0


class WriterThread:
    """Runs a Writer on a thread: callers queue submissions (bounded), the thread takes whatever
    has queued up as one batch, and looks for due reservations between batches."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._queue: queue.Queue[Submission | None] = queue.Queue(writer.limits.queue_submissions_max)
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._running = False
        self.stats = WriterStats(writer.limits.slow_batch_s)

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def stop(self, timeout_s: float = STOP_WAIT_S) -> None:
        """Finishes what is queued, then stops."""
        if not self._running:
            return
        self._running = False
        # Full: the thread sees _running and stops after the batch in hand.
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Submissions waiting for the next batch."""
        return self._queue.qsize()

    def submit(self, events: list[StockEvent], done: Done) -> None:
        if not self._running:
            raise WriterUnavailable("the writer is stopped")
        try:
            self._queue.put_nowait(Submission(events, done, current_request_id(), caller_trace_parent()))
        except queue.Full:
            self.stats.queue_full()
            raise WriterUnavailable("the writer's queue is full") from None

    def submit_and_wait(self, events: list[StockEvent], timeout_s: float) -> list[EventResult]:
        """For callers without an event loop (CLI, tests, the Kafka intake)."""
        finished = threading.Event()
        outcome: list[list[EventResult] | BaseException] = []

        def done(result: list[EventResult] | BaseException) -> None:
            outcome.append(result)
            finished.set()

        self.submit(events, done)
        if not finished.wait(timeout_s):
            raise TimeoutError("the writer did not answer in time")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _run(self) -> None:
        writer = self.writer
        while True:
            try:
                first = self._queue.get(timeout=writer.limits.expiry_interval_s)
            except queue.Empty:
                first = None
                if not self._running:
                    break
            stopping = first is None and not self._running
            if first is not None:
                batch, stop_asked = drain_queue(self._queue, first, writer.limits.batch_events_max)
                stopping = stopping or stop_asked
                batch = traced(self.stats.timed(batch))
                with batch_logged(batch):
                    writer.process(batch)
            writer.maybe_expire()
            if stopping and self._queue.empty():
                break


class ThreadWriterClient:
    """The ledger's view of a WriterThread (the same as of the writer process's RemoteWriter)."""

    def __init__(self, thread: WriterThread, timeout_s: float) -> None:
        self.thread = thread
        self.writer = thread.writer
        self.timeout_s = timeout_s

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.thread.stop()

    @property
    def alive(self) -> bool:
        return self.thread.alive

    @property
    def commits_seen(self) -> int:
        return self.writer.batches_committed

    @property
    def stats(self) -> WriterStatsSnapshot | None:
        writer = self.writer
        return self.thread.stats.snapshot(
            self.thread.queued, (writer.optimistic_won, writer.optimistic_lost), writer.oversold.lines
        )

    async def subscribe(self) -> None:
        """Nothing to do: this process's writer installs its commits in the cache itself."""

    async def submit(self, events: list[StockEvent]) -> list[EventResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[EventResult]] = loop.create_future()

        def done(result: list[EventResult] | BaseException) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        self.thread.submit(events, done)
        return await asyncio.wait_for(future, self.timeout_s)

    def submit_and_wait(self, events: list[StockEvent]) -> list[EventResult]:
        return self.thread.submit_and_wait(events, self.timeout_s)

    # Records what it is sent before answering: it decides nothing ahead, so nothing is gained by
    # leaving a batch with it.
    sends_ahead = False

    def send(self, events: list[StockEvent], after: Sent | None = None) -> Sent:
        return answered_now(self.submit_and_wait, events, after)


def _settle(future: asyncio.Future[list[EventResult]], result: list[EventResult] | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
