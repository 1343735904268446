"""The two kinds of failure a writer answers: unavailable (re-send later) and refused (a retry will
not change it), as the writer classifies them, as they cross the wire, and as HTTP answers them."""

from __future__ import annotations

import pickle
import sqlite3

import pytest

from ledger.api.problems import problem_for
from ledger.writer.submission import SubmissionFailed, WriterUnavailable, failure_kind
from ledger.writer.wire import (
    REFUSED,
    UNAVAILABLE,
    Replies,
    Reply,
    UnexpectedMessage,
    decode_from_writer,
    encode,
)

FRAME_HEADER_BYTES = 4


def _round_trip(reply: Reply) -> Reply:
    message = decode_from_writer(encode(Replies([reply]))[FRAME_HEADER_BYTES:])
    assert isinstance(message, Replies)
    [back] = message.replies
    return back


def test_a_database_that_is_unavailable_is_told_apart_from_a_bug() -> None:
    locked = sqlite3.OperationalError("database is locked")
    unavailable = failure_kind(locked)
    assert isinstance(unavailable, WriterUnavailable)
    assert unavailable.__cause__ is locked
    full = OSError(28, "No space left on device")
    assert isinstance(failure_kind(full), WriterUnavailable)
    bug = KeyError("no such store")
    refused = failure_kind(bug)
    assert isinstance(refused, SubmissionFailed)
    assert refused.__cause__ is bug
    assert "KeyError" in refused.reason and "no such store" in refused.reason


def test_each_kind_of_failure_crosses_the_wire_as_itself() -> None:
    for kind in (UNAVAILABLE, REFUSED):
        assert _round_trip(Reply(7, None, "why", kind)) == Reply(7, None, "why", kind)
    assert _round_trip(Reply(8, [])) == Reply(8, [])


def test_a_failed_reply_without_a_known_kind_is_an_assertion_failure() -> None:
    with pytest.raises(AssertionError):
        Reply(7, None, "why")
    with pytest.raises(UnexpectedMessage):
        body = pickle.dumps(("r", [(7, None, "why", "maybe")]))
        decode_from_writer(body)


def test_over_http_a_refused_submission_is_no_invitation_to_send_it_again() -> None:
    refused = problem_for(SubmissionFailed("PoisonBug: the writer cannot store event e-1"))
    assert refused is not None
    assert (refused.status, refused.type) == (422, "submission-failed")
    assert "PoisonBug" not in refused.detail  # a bug's text stays in the log
    unavailable = problem_for(WriterUnavailable("the writer's queue is full"))
    assert unavailable is not None and unavailable.status == 503
