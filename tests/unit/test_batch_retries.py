"""What the writer does with a batch that keeps failing (ledger/writer/batching.py): a bad submission
fails only itself, and a database that is unavailable is said to every caller at once, not after
each submission has had retries of its own (the writer answers nobody while it retries)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from ledger.writer import batching
from ledger.writer.submission import Submission, SubmissionFailed, WriterUnavailable

RETRIES_MAX = 2


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "RETRY_WAIT_S_FIRST", 0.0)


def _batch(count: int) -> tuple[list[Submission], list[Any]]:
    answers: list[Any] = [None] * count
    batch = [Submission([], lambda result, i=i: answers.__setitem__(i, result)) for i in range(count)]
    return batch, answers


def test_an_unavailable_database_is_told_to_the_whole_batch_after_its_retries() -> None:
    batch, answers = _batch(3)
    attempts: list[int] = []

    def record(submissions: list[Submission]) -> list[list[Any]]:
        attempts.append(len(submissions))
        raise sqlite3.OperationalError("disk I/O error")

    batching.record_with_retries(batch, record, RETRIES_MAX, lambda *_: None)
    assert attempts == [3] * (RETRIES_MAX + 1), "the submissions were tried again one by one"
    assert all(isinstance(answer, WriterUnavailable) for answer in answers), answers
    assert len({id(answer) for answer in answers}) == len(answers), "callers share one exception"


def test_a_failure_that_is_not_the_database_is_narrowed_to_the_submission_that_causes_it() -> None:
    batch, answers = _batch(3)
    bad = batch[1]

    def record(submissions: list[Submission]) -> list[list[Any]]:
        if bad in submissions:
            raise ValueError("cannot store this")
        return [[] for _ in submissions]

    batching.record_with_retries(batch, record, RETRIES_MAX, lambda *_: None)
    assert answers[0] == [] and answers[2] == []
    assert isinstance(answers[1], SubmissionFailed)
