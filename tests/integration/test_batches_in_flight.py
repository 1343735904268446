"""A batch decided while the one before it is still being recorded (the writer process's loop).

The writer sends a batch, decides the next one on top of it from memory, and sends that one only
once the first has committed. These tests drive the three steps (prepare, send, land) by hand on
a real PostgreSQL, with a second instance writing in between where it hurts most.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import events as ev
from support.postgres import EmbeddedPostgres

from ledger.bootstrap import build_ledger, build_writer
from ledger.config import Settings
from ledger.domain.model import Outcome, RejectionReason, StockEvent
from ledger.results import EventResult
from ledger.service import Ledger
from ledger.writer import facade, in_flight
from ledger.writer.facade import Writer
from ledger.writer.in_flight import InFlight, Ready
from ledger.writer.submission import Submission

STORE = "store-1"


def _event(event_id: str, event_type: str, lines: list[tuple[str, int]], **data: object) -> StockEvent:
    return ev.stock_event(event_id, event_type, STORE, lines, source="tests/in-flight", **data)


class Answers:
    def __init__(self) -> None:
        self.results: list[list[EventResult] | BaseException] = []

    def submission(self, *events: StockEvent) -> list[Submission]:
        return [Submission(list(events), self.results.append)]

    def only(self) -> EventResult:
        [answer] = self.results
        assert not isinstance(answer, BaseException), answer
        [result] = answer
        return result


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> str:
    return postgres.create_database("in_flight")


@pytest.fixture
def writer_and_other(database_url: str) -> Iterator[tuple[Writer, Ledger]]:
    """A writer driven by hand, and another instance writing to the same database."""
    writer = build_writer(Settings(database_url=database_url, writer_optimistic=True))
    other = build_ledger(Settings(database_url=database_url))
    other.start()
    try:
        yield writer, other
    finally:
        other.stop()
        writer.recorder.close()


def _warm(writer: Writer) -> None:
    """5 units, in two entries, so that the writer's memory holds the SKU and the store."""
    for event in (
        _event("r1", "stock.receipt", [("SKU-1", 4)]),
        _event("warm", "stock.adjustment", [("SKU-1", 1)], reason="found"),
    ):
        answers = Answers()
        writer.process(answers.submission(event))
        assert answers.only().outcome is Outcome.ACCEPTED


def _level(writer: Writer) -> tuple[int, int]:
    with writer.recorder.read_transaction() as tx:
        row = tx.fetchone(
            "SELECT on_hand, reserved FROM ledger_levels WHERE store_id = %s AND sku = %s", (STORE, "SKU-1")
        )
    assert row is not None
    return int(row["on_hand"]), int(row["reserved"])


def _reserve(writer: Writer, answers: Answers, reservation_id: str, qty: int) -> Ready:
    """A reservation of SKU-1, decided from memory and not sent yet."""
    event = _event(
        reservation_id.lower(), "stock.reservation", [("SKU-1", qty)], reservation_id=reservation_id
    )
    ready = in_flight.prepare(writer, answers.submission(event))
    assert ready is not None
    return ready


def _sent(writer: Writer, ready: Ready) -> InFlight:
    flight = in_flight.send(writer, ready)
    assert flight is not None
    return flight


def test_the_next_batch_is_decided_on_top_of_the_one_in_flight(
    writer_and_other: tuple[Writer, Ledger],
) -> None:
    writer, _ = writer_and_other
    _warm(writer)
    first, second = Answers(), Answers()
    ready_a = _reserve(writer, first, "A", 3)
    flight_a = _sent(writer, ready_a)
    # Decided while A is in flight: only 2 of the 5 units are left once A counts.
    ready_b = _reserve(writer, second, "B", 3)
    assert in_flight.land(writer, flight_a)
    assert first.only().outcome is Outcome.ACCEPTED
    flight_b = _sent(writer, ready_b)
    assert in_flight.land(writer, flight_b)
    refused = second.only()
    assert refused.outcome is Outcome.REJECTED
    assert refused.reason is RejectionReason.INSUFFICIENT_STOCK
    assert refused.position == first.only().position + 1  # type: ignore[operator]
    assert _level(writer) == (5, 3)


def test_a_write_between_two_batches_makes_the_second_lose_its_bet(
    writer_and_other: tuple[Writer, Ledger],
) -> None:
    writer, other = writer_and_other
    _warm(writer)
    first, second = Answers(), Answers()
    ready_a = _reserve(writer, first, "A", 2)
    flight_a = _sent(writer, ready_a)
    ready_b = _reserve(writer, second, "B", 3)  # decided with 3 units left
    assert in_flight.land(writer, flight_a)
    # A till sells one unit through another instance before B goes out: only 2 are left.
    [sold] = other.submit_and_wait([_event("pos", "stock.pos_sale", [("SKU-1", 1)])])
    assert sold.outcome is Outcome.ACCEPTED
    lost_before = writer.optimistic_lost
    flight_b = _sent(writer, ready_b)
    assert not in_flight.land(writer, flight_b)  # the head moved: recorded the ordinary way
    assert writer.optimistic_lost == lost_before + 1
    refused = second.only()
    assert refused.outcome is Outcome.REJECTED
    assert refused.reason is RejectionReason.INSUFFICIENT_STOCK
    assert _level(writer) == (4, 2)


def test_what_was_decided_on_top_of_a_failed_batch_is_never_sent(
    writer_and_other: tuple[Writer, Ledger],
) -> None:
    writer, other = writer_and_other
    _warm(writer)
    first, second = Answers(), Answers()
    ready_a = _reserve(writer, first, "A", 3)
    # Another instance sells 2 units after A was decided: A's bet is lost before it is sent.
    [sold] = other.submit_and_wait([_event("pos", "stock.pos_sale", [("SKU-1", 2)])])
    assert sold.outcome is Outcome.ACCEPTED
    flight_a = _sent(writer, ready_a)
    # B is decided on top of A as this writer believes it: 5 - 3 = 2 left, so 1 unit fits.
    ready_b = _reserve(writer, second, "B", 1)
    assert not in_flight.land(writer, flight_a)  # recorded the ordinary way: 3 of the 3 units left
    assert first.only().outcome is Outcome.ACCEPTED
    # B's decision rested on a state that never was: it must not go out as decided.
    assert in_flight.send(writer, ready_b) is None
    writer.process(ready_b.batch)
    refused = second.only()
    assert refused.outcome is Outcome.REJECTED
    assert refused.reason is RejectionReason.INSUFFICIENT_STOCK
    assert _level(writer) == (3, 3)


def test_a_batch_whose_deciding_fails_is_recorded_the_ordinary_way(
    writer_and_other: tuple[Writer, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while deciding from memory must not stop the writer process: `prepare` says
    "not from memory" and the ordinary way decides again (and answers, error or not)."""
    writer, _ = writer_and_other
    _warm(writer)

    def broken(*_: object) -> None:
        raise RuntimeError("deciding failed")

    monkeypatch.setattr(writer, "decide_from_memory", broken)
    answers = Answers()
    batch = answers.submission(_event("a", "stock.reservation", [("SKU-1", 2)], reservation_id="A"))
    assert in_flight.prepare(writer, batch) is None
    monkeypatch.undo()
    writer.process(batch)
    assert answers.only().outcome is Outcome.ACCEPTED
    assert _level(writer) == (5, 2)


def test_a_lost_bet_takes_back_only_what_its_batch_put_in_memory(
    writer_and_other: tuple[Writer, Ledger],
) -> None:
    """The batch in flight put its effects in memory before it committed. When it loses its bet
    (another instance wrote), those effects must go, or the ordinary way would count them twice;
    the rest of memory stays (emptying it all made every lost bet cost a read of every key)."""
    writer, other = writer_and_other
    _warm(writer)
    answers = Answers()
    writer.process(answers.submission(_event("r2", "stock.receipt", [("SKU-2", 5), ("SKU-3", 1)])))
    assert answers.only().outcome is Outcome.ACCEPTED
    reserving = Answers()
    event = _event("a", "stock.reservation", [("SKU-2", 3)], reservation_id="A")
    ready = in_flight.prepare(writer, reserving.submission(event))
    assert ready is not None
    [sold] = other.submit_and_wait([_event("pos", "stock.pos_sale", [("SKU-1", 1)])])
    assert sold.outcome is Outcome.ACCEPTED
    assert not in_flight.land(writer, _sent(writer, ready))  # lost: recorded the ordinary way
    assert reserving.only().outcome is Outcome.ACCEPTED
    with writer.recorder.read_transaction() as tx:
        row = tx.fetchone(
            "SELECT reserved FROM ledger_levels WHERE store_id = %s AND sku = 'SKU-2'", (STORE,)
        )
    assert row is not None and int(row["reserved"]) == 3, "the lost batch's 3 units counted once"
    assert (STORE, "SKU-1") not in writer.cache.levels, "the other instance's write is forgotten"
    assert (STORE, "SKU-3") in writer.cache.levels, "memory kept what nobody else changed"


def test_a_lost_bet_takes_back_the_event_keys_its_batch_put_in_memory(
    writer_and_other: tuple[Writer, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch in flight put its events' keys in memory as recorded. When it loses its bet to
    another instance that recorded the same event first, memory must not keep the position the
    lost batch had planned: a later resend is answered with the position that committed."""
    monkeypatch.setattr(facade, "CONTENDED_S", 0.0)  # the resend is decided from memory at once
    writer, other = writer_and_other
    _warm(writer)
    planned = Answers()
    ready = in_flight.prepare(writer, planned.submission(_event("x", "stock.receipt", [("SKU-1", 2)])))
    assert ready is not None
    other.submit_and_wait([_event("pos", "stock.pos_sale", [("SKU-1", 1)])])  # moves the head on
    [first] = other.submit_and_wait([_event("x", "stock.receipt", [("SKU-1", 2)])])
    assert first.outcome is Outcome.ACCEPTED and first.position != ready.statement.positions[-1]
    assert not in_flight.land(writer, _sent(writer, ready))  # lost: recorded the ordinary way
    assert planned.only().outcome is Outcome.DUPLICATE
    resent = Answers()
    writer.process(resent.submission(_event("x", "stock.receipt", [("SKU-1", 2)])))
    again = resent.only()
    assert again.outcome is Outcome.DUPLICATE
    assert again.original is not None and again.original.position == first.position
    assert _level(writer) == (6, 0)
    assert not writer.recent_keys.known([_event("x", "stock.receipt", [("SKU-1", 2)])]), "the other's"
