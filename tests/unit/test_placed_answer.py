"""The answer to a reservation across stores (and to sourcing with `reserve`) is written from the
writer's answer, without building the parts as reservations: it must say exactly what the same
reservation says when read back (GET /v1/reservations/{id} renders it with across_public)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.api.reservations_across import across_public, placed_public
from ledger.clock import utc_text
from ledger.domain.across_stores import SourceAndReserve
from ledger.domain.model import EventType, Line, Outcome, Reservation, ReservationLine
from ledger.results import EventResult
from ledger.service import ReservationView

POSITION = 41


def _command(**fields: object) -> SourceAndReserve:
    return SourceAndReserve(
        event_id="R1",
        source="tests/placed",
        type=EventType.RESERVATION,
        time=datetime(2026, 12, 3, tzinfo=UTC),
        store_id="s2",
        lines=(Line("A", 3), Line("B", 1)),
        reservation_id="R1",
        candidates=("s2", "s1"),
        **fields,  # type: ignore[arg-type]
    )


def _read_back(command: SourceAndReserve, result: EventResult) -> list[ReservationView]:
    """The parts as the ledger holds them once placed (the expiry stored as UTC text and read back
    as ledger/state_cache.py reads it)."""
    assert command.reservation_id is not None
    expires_at = command.expires_at
    stored = datetime.fromisoformat(utc_text(expires_at)) if expires_at is not None else None
    return [
        ReservationView(
            Reservation(
                store_id=store,
                reservation_id=command.reservation_id,
                order_id=command.order_id,
                expires_at=stored,
                lines={sku: ReservationLine(qty) for sku, qty in lines},
                placed_at_position=POSITION,
                channel=command.channel,
            ),
            POSITION,
        )
        for store, lines in result.placed
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {
            "order_id": "O-7",
            "channel": "online",
            "expires_at": datetime(2026, 12, 4, 10, 30, tzinfo=UTC),
        },
        {"expires_at": datetime(2026, 12, 4, 13, 30, 0, 250, tzinfo=timezone(timedelta(hours=3)))},
    ],
)
def test_the_answer_of_a_placement_is_what_reading_it_back_says(fields: dict[str, object]) -> None:
    command = _command(**fields)
    # In log order (candidate order): s2 first; the answer lists the parts by store id.
    placed = (("s2", (("A", 2), ("B", 1))), ("s1", (("A", 1),)))
    result = EventResult("R1", "tests/placed", "s2", Outcome.ACCEPTED, position=POSITION, placed=placed)
    assert placed_public(command, result) == across_public(_read_back(command, result))
