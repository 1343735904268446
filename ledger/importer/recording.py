"""Records the lines of an import through the writer, in order, in batches, and counts outcomes.

The writer is the one every event goes through (HTTP, Kafka): the same decisions, the same
duplicate check by (source, id), the same transaction for the entries and their projections. So
an import run twice records nothing new the second time, and an import that stopped half-way
(an outage, Ctrl+C) is finished by running it again.

Reading and recording overlap: a thread records batch N while this one reads and checks the
lines of the batches after it (at most `batches_ahead_max` wait in the queue, and the recording
thread holds READ_AHEAD_BATCHES more, so memory stays bounded). The writer is told the next two
batches when they are read already: it decides N+1 while N is recorded, and reads what N+2 needs
before it sends N+1 (ledger/importer/pipeline.py). Batches commit one at a time, in order, so the
file's order is the log's order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ledger.domain.model import Outcome, StockEvent
from ledger.importer.progress import Progress
from ledger.importer.reading import FileProgress, InvalidLine, ValidLine
from ledger.results import EventResult
from ledger.writer.submission import SubmissionFailed, WriterUnavailable

RETRY_WAIT_S_FIRST = 0.1


class ImportWriter(Protocol):
    """The writer as the import reaches it (ledger/importer/writers.py). `upcoming`: the batch
    the next call will record, which the writer may start on once `events` have committed."""

    def submit_and_wait(
        self,
        events: list[StockEvent],
        upcoming: list[StockEvent] | None = None,
        later: list[StockEvent] | None = None,
    ) -> list[EventResult]: ...


@dataclass(frozen=True, slots=True)
class ImportLimits:
    batch_events_max: int
    batches_ahead_max: int
    retries_max: int
    retry_wait_s_max: float


@dataclass(slots=True)
class Summary:
    """What became of the file's lines. `failed`: valid, but the writer refused to record them
    even alone (a bug, or something it cannot store); like invalid ones they are not recorded."""

    lines: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    invalid: int = 0
    failed: int = 0
    first_position: int | None = None
    last_position: int | None = None
    elapsed_s: float = 0.0
    stopped: str | None = None  # why the import stopped before the end of the file

    @property
    def recorded(self) -> int:
        """Events with an outcome in the log: accepted and rejected ones are entries; duplicates
        were recorded before."""
        return self.accepted + self.duplicate + self.rejected

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.invalid == 0 and self.failed == 0

    def count(self, result: EventResult) -> None:
        if result.outcome is Outcome.ACCEPTED:
            self.accepted += 1
        elif result.outcome is Outcome.DUPLICATE:
            self.duplicate += 1
        else:
            self.rejected += 1
        if result.position is not None:
            if self.first_position is None:
                self.first_position = result.position
            self.last_position = result.position


class ImportStopped(Exception):
    """The writer could not record a batch after every retry; what came before it is recorded."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"stopped at line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason


@dataclass(slots=True)
class _Batch:
    lines: list[ValidLine] = field(default_factory=list)
    events: list[StockEvent] = field(default_factory=list)  # the lines' events, one list for the writer
    bytes_read: int = 0
    line_no: int = 0


READ_AHEAD_BATCHES = 2  # the next batch, sent once this one lands, and the one after, read ahead


class Importer:
    def __init__(self, writer: ImportWriter, limits: ImportLimits, progress: Progress) -> None:
        self.writer = writer
        self.limits = limits
        self.progress = progress
        self.summary = Summary()
        self._batches: queue.Queue[_Batch | None] = queue.Queue(limits.batches_ahead_max)
        self._failure: ImportStopped | None = None
        self._crash: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._record_batches, name="ledger-import", daemon=True)
        # Every line up to this one has its outcome (recorded, or reported invalid); the reading
        # runs ahead of it by up to LEDGER_IMPORT_BATCHES_AHEAD_MAX batches and the one it fills.
        self.done_through_line = 0

    def run(self, lines: Iterable[ValidLine | InvalidLine], file_progress: FileProgress) -> Summary:
        """Records every valid line in order and reports every invalid one; the summary of it all.
        Stops early (summary.stopped says why) when the writer cannot record a batch."""
        started = time.monotonic()
        self._thread.start()
        try:
            batch = _Batch()
            for line in lines:
                if self._stop.is_set():
                    break
                self.summary.lines += 1
                if isinstance(line, InvalidLine):
                    self.summary.invalid += 1
                    self.progress.say(f"line {line.line_no}: invalid, not recorded: {line.reason}")
                    continue
                batch.lines.append(line)
                batch.events.append(line.event)
                if len(batch.lines) >= self.limits.batch_events_max:
                    self._hand_over(batch, file_progress)
                    batch = _Batch()
            if batch.lines and not self._stop.is_set():
                self._hand_over(batch, file_progress)
        finally:
            self._put(None)
            self._thread.join()
            self.summary.elapsed_s = time.monotonic() - started
        if self._crash is not None:
            raise self._crash
        if self._failure is not None:
            self.summary.stopped = str(self._failure)
        return self.summary

    def _hand_over(self, batch: _Batch, file_progress: FileProgress) -> None:
        batch.bytes_read, batch.line_no = file_progress.bytes_read, file_progress.line_no
        self._put(batch)

    def _put(self, batch: _Batch | None) -> None:
        """Waits for room in the queue, unless the recording thread has stopped taking from it."""
        while True:
            try:
                self._batches.put(batch, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    # -- the recording thread -------------------------------------------------------------------

    def _record_batches(self) -> None:
        try:
            self._record_in_order()
        except BaseException as error:  # noqa: BLE001 - a bug: the reading thread stops and raises it
            self._crash = error
            self._stop.set()

    def _record_in_order(self) -> None:
        # The batches read already, in order (at most READ_AHEAD_BATCHES), and whether the end of
        # the file was among them: the writer may start on the next one or two meanwhile.
        ahead: deque[_Batch] = deque()
        ended = False
        batch = self._batches.get()
        while batch is not None:
            while not ended and len(ahead) < READ_AHEAD_BATCHES:
                try:
                    waiting = self._batches.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    ended = True
                else:
                    ahead.append(waiting)
            upcoming = ahead[0] if ahead else None
            later = ahead[1] if len(ahead) > 1 else None
            try:
                self._record(batch, upcoming, later)
            except ImportStopped as stopped:
                self._failure = stopped
                self._stop.set()
                return
            self.done_through_line = batch.line_no
            self.progress.update(batch.bytes_read, batch.line_no, self.summary.recorded)
            batch = ahead.popleft() if ahead else (None if ended else self._batches.get())

    def _record(self, batch: _Batch, upcoming: _Batch | None, later: _Batch | None = None) -> None:
        lines = batch.lines
        try:
            results = self._submit(
                lines, batch.events, upcoming.events if upcoming else None, later.events if later else None
            )
        except SubmissionFailed:
            # One event the writer cannot store fails its batch: the others are recorded one by
            # one, as the Kafka intake does, and only that one is reported.
            for line in lines:
                try:
                    [result] = self._submit([line], [line.event], None, None)
                except SubmissionFailed as error:
                    self.summary.failed += 1
                    self.progress.say(f"line {line.line_no}: not recorded, the writer refused it: {error}")
                    continue
                self._counted(line, result)
            return
        for line, result in zip(lines, results, strict=True):
            self._counted(line, result)

    def _counted(self, line: ValidLine, result: EventResult) -> None:
        self.summary.count(result)
        if result.outcome is Outcome.REJECTED:
            reason = result.reason.value if result.reason else "rejected"
            self.progress.say(
                f"line {line.line_no}: rejected ({reason}), recorded at position {result.position}"
            )

    def _submit(
        self,
        lines: list[ValidLine],
        events: list[StockEvent],
        upcoming: list[StockEvent] | None,
        later: list[StockEvent] | None,
    ) -> list[EventResult]:
        """One batch through the writer. Unavailable now (a restart, a timeout): the same batch
        again, waiting longer each time; re-sending is safe, since what did commit answers as a
        duplicate. SubmissionFailed (a retry would fail the same) goes to the caller."""
        wait_s = RETRY_WAIT_S_FIRST
        for attempt in range(self.limits.retries_max + 1):
            try:
                return self.writer.submit_and_wait(events, upcoming, later)
            except (WriterUnavailable, TimeoutError, OSError) as error:
                if attempt == self.limits.retries_max:
                    raise ImportStopped(
                        lines[0].line_no, f"the writer could not record it: {error}"
                    ) from None
                self.progress.say(
                    f"the writer could not record lines {lines[0].line_no}-{lines[-1].line_no} "
                    f"({error}); trying again in {wait_s:.1f} s"
                )
                time.sleep(wait_s)
                wait_s = min(wait_s * 2, self.limits.retry_wait_s_max)
        raise AssertionError("unreachable: the last attempt returns or raises")
