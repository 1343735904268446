"""/readyz takes the outcome of recent writes for whether writes can be recorded. A batch the Kafka
intake only sent to the writer process (Ledger.send) is not an outcome: it was taken for a
recorded write, so during a database outage /readyz said ready for a second after each send."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.results import EventResult
from ledger.service import Ledger
from ledger.writer.submission import WriterUnavailable


class Handle:
    def __init__(self, answer: list[EventResult] | None, failure: Exception | None = None) -> None:
        self.answer, self.failure = answer, failure

    def wait(self) -> list[EventResult]:
        if self.failure is not None:
            raise self.failure
        assert self.answer is not None
        return self.answer

    def poll(self, wait_s: float) -> list[EventResult] | None:
        if self.failure is not None:
            raise self.failure
        return self.answer


class WriterProcessLike:
    """Takes a batch and answers later, as the writer process does."""

    sends_ahead = True

    def __init__(self, handle: Handle | None = None, refuse: Exception | None = None) -> None:
        self.handle, self.refuse = handle, refuse

    def send(self, events: list[StockEvent], after: object = None) -> Handle:
        if self.refuse is not None:
            raise self.refuse
        assert self.handle is not None
        return self.handle


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return build_ledger(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}"))


def test_a_batch_only_sent_says_nothing_of_whether_writes_are_recorded(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "writer", WriterProcessLike(Handle(None)))
    sent = ledger.send([])
    assert not ledger.write_health.settled()  # nothing is known: /readyz asks the writer
    assert sent.poll(0.0) is None
    assert not ledger.write_health.settled()


def test_its_answer_and_its_failures_are_noted(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "writer", WriterProcessLike(Handle([])))
    assert ledger.send([]).poll(0.0) == []
    assert ledger.write_health.settled() and ledger.write_failure is None

    monkeypatch.setattr(
        ledger, "writer", WriterProcessLike(Handle(None, WriterUnavailable("the database is down")))
    )
    sent = ledger.send([])
    with pytest.raises(WriterUnavailable):
        sent.poll(0.0)
    assert ledger.write_failure == "WriterUnavailable: the database is down"

    ledger.write_health = type(ledger.write_health)()
    monkeypatch.setattr(ledger, "writer", WriterProcessLike(refuse=WriterUnavailable("no writer")))
    with pytest.raises(WriterUnavailable):
        ledger.send([])
    assert ledger.write_failure == "WriterUnavailable: no writer"
