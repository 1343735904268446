"""One outage under load, and what must hold through it: no 500, no hang, 503 problem+json with
Retry-After while it lasts, keep-alive connections kept, /readyz telling the truth, and recovery
with no restart."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from ledger.service import WRITE_EVIDENCE_S
from production.checks import check_answers
from production.load import Acknowledged, Catalogue, HttpReaders, HttpWriters, ReadinessWatch, run_until
from production.service import ProductionService

HTTP_WRITER_THREADS = 4
HTTP_READER_THREADS = 2
READ_PAUSE_S = 0.05
WRITE_PAUSE_S = 0.02
# How long the service runs under load before and after the outage.
STEADY_S = 3.0
RECOVERY_DEADLINE_S = 90.0
# /readyz may still say ready this long after the outage began: a write that succeeded just before
# it stands as evidence for WRITE_EVIDENCE_S (ledger/service.py), and a probe takes some time.
READY_GRACE_S = WRITE_EVIDENCE_S + 1.0


@dataclass(frozen=True)
class Window:
    """From `began` the fault was in effect; from `lifting` it was being lifted, from `lifted` gone."""

    began: float
    lifting: float
    lifted: float


class LoadThroughOutage:
    """HTTP writers (which send again what was not answered), readers over keep-alive connections
    and a /readyz watch, on one service, for the length of a `with` block."""

    def __init__(self, service: ProductionService, catalogue: Catalogue) -> None:
        self.service = service
        self.acknowledged = Acknowledged()
        self.writers = HttpWriters(
            service,
            catalogue,
            self.acknowledged,
            threads=HTTP_WRITER_THREADS,
            strict=False,
            pause_s=WRITE_PAUSE_S,
        )
        self.readers = HttpReaders(service, catalogue, threads=HTTP_READER_THREADS, pause_s=READ_PAUSE_S)
        self.readiness = ReadinessWatch(service)
        self.pid = service.pid
        self.process_ids: frozenset[int] = frozenset()

    def __enter__(self) -> LoadThroughOutage:
        for loop in (self.writers, self.readers, self.readiness):
            loop.start()
        run_until(lambda: len(self.acknowledged.events) > 0, RECOVERY_DEADLINE_S, "a first write")
        time.sleep(STEADY_S)
        self.process_ids = self.service.process_ids()
        return self

    def __exit__(self, *_: object) -> None:
        for loop in (self.writers, self.readers, self.readiness):
            loop.stop()

    def go_through(self, fault: contextlib.AbstractContextManager[Any], outage_s: float) -> Window:
        """Puts the service through `fault` for `outage_s`, then waits until it writes and is ready
        again, and runs STEADY_S more."""
        with fault:
            began = time.monotonic()
            time.sleep(outage_s)
            lifting = time.monotonic()
        window = Window(began, lifting, time.monotonic())
        run_until(
            lambda: any(
                a.status == 200 and a.sent_at > window.lifted
                for a in self.writers.answers
                if a.what == "events"
            ),
            RECOVERY_DEADLINE_S,
            "a write recorded after the outage",
        )
        run_until(
            lambda: any(a.status == 200 and a.sent_at > window.lifted for a in self.readiness.answers),
            RECOVERY_DEADLINE_S,
            "/readyz to answer 200 after the outage",
        )
        time.sleep(STEADY_S)
        return window

    def check(self, window: Window, *, writes_refused: bool, reads_refused: bool) -> None:
        """What every outage must keep to (the consistency of the ledger is checked by the caller)."""
        assert self.service.running() and self.service.pid == self.pid, "the service was restarted"
        replaced = self.process_ids - self.service.process_ids()
        assert not replaced, (
            f"processes of the service were replaced during the outage (an HTTP worker that uvicorn "
            f"found unresponsive, or the writer): {sorted(replaced)}"
        )
        check_answers(self.writers.answers, expected={200, 201, 409, 503}, transport_errors_allowed=False)
        check_answers(self.readers.answers, expected={200, 503}, transport_errors_allowed=False)
        check_answers(self.readiness.answers, expected={200, 503}, transport_errors_allowed=False)
        during = [a for a in self.writers.answers if window.began <= a.sent_at <= window.lifting]
        refused = [a for a in during if a.status == 503]
        if writes_refused:
            assert refused, f"no write was refused during the outage: {len(during)} answered"
        else:
            assert not refused, f"{len(refused)} of {len(during)} writes refused during the outage"
        reads = [a for a in self.readers.answers if window.began <= a.sent_at <= window.lifting]
        if reads_refused:
            assert any(a.status == 503 for a in reads), f"no read was refused during the outage: {len(reads)}"
        else:
            assert all(a.status == 200 for a in reads), f"reads refused during the outage: {len(reads)}"

    def check_readiness(self, window: Window, *, strictly: bool) -> None:
        """/readyz said 503 during the outage; `strictly`: every time it was asked, once
        READY_GRACE_S had passed (a fault that some timeout must reveal first is not strict)."""
        asked = [a.status for a in self.readiness.answers if window.began <= a.sent_at <= window.lifted]
        assert 503 in asked, f"/readyz never said 503 during the outage: {asked}"
        if strictly:
            inside = self.readiness.statuses_between(window.began + READY_GRACE_S, window.lifting)
            assert 200 not in inside, f"/readyz said 200 while the outage lasted: {inside}\n" + "\n".join(
                f"  asked at +{a.sent_at - window.began:.1f} s, answered +{a.answered_at - a.sent_at:.1f} s "
                f"later: {a.status} {a.body}"
                for a in self.readiness.answers
                if window.began <= a.sent_at <= window.lifting
            )
