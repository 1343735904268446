"""What crosses between the HTTP workers and the writer process comes back equal (pickled as values)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.domain.model import (
    EventType,
    Line,
    Outcome,
    RejectionReason,
    Shortfall,
    StockEvent,
    event_fields_from_values,
)
from ledger.results import EventResult, Original, _result_from_values
from ledger.writer.stats import WriterStats
from ledger.writer.wire import (
    FRAME,
    StatsReport,
    WriteRequest,
    decode_from_writer,
    decode_to_writer,
    encode,
    encode_for_peers,
)

NOW = datetime(2026, 11, 22, 7, 15, tzinfo=UTC)
MOSCOW = timezone(timedelta(hours=3))


def _round_trip(value: object) -> object:
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def test_an_event_with_every_field_comes_back_equal() -> None:
    event = StockEvent(
        event_id="e-1",
        source="pos/till-3",
        type=EventType.TRANSFER,
        time=NOW.astimezone(MOSCOW).replace(microsecond=123456),
        store_id="store-1",
        lines=(Line("SKU-1", 6), Line("SKU-2", 1)),
        order_id="o-1",
        reservation_id="r-1",
        reference="ref",
        transfer_id="t-1",
        to_store="store-2",
        reason="damaged",
        expires_at=NOW + timedelta(minutes=15),
        principal="till-3",
    )
    back = _round_trip(event)
    assert back == event
    assert isinstance(back, StockEvent) and back.type is EventType.TRANSFER
    assert back.time.isoformat() == event.time.isoformat()  # the instant and its offset
    assert all(isinstance(line, Line) for line in back.lines)


def test_an_event_without_lines_or_optional_fields_comes_back_equal() -> None:
    event = StockEvent(
        "e-2", "ledger/http", EventType.RESERVATION_RELEASE, NOW, "store-1", (), reservation_id="r"
    )
    assert _round_trip(event) == event


def test_results_of_every_kind_come_back_equal() -> None:
    results = [
        EventResult("e-1", "s", "store-1", Outcome.ACCEPTED, position=7),
        EventResult(
            "e-2",
            "s",
            "store-1",
            Outcome.REJECTED,
            RejectionReason.INSUFFICIENT_STOCK,
            (Shortfall("SKU-1", 3, 1), Shortfall("SKU-2", 2, 0)),
            position=8,
        ),
        EventResult("e-3", "s", "store-1", Outcome.DUPLICATE, original=Original(Outcome.ACCEPTED, None, 7)),
        EventResult(
            "e-4",
            "s",
            "store-1",
            Outcome.DUPLICATE,
            original=Original(Outcome.REJECTED, RejectionReason.RESERVATION_CONFLICT, 9),
        ),
    ]
    back = _round_trip(results)
    assert back == results
    assert back[1].reason is RejectionReason.INSUFFICIENT_STOCK
    assert back[3].original.reason is RejectionReason.RESERVATION_CONFLICT


def test_a_write_request_carries_its_request_id_and_trace_parent_only_when_it_has_them() -> None:
    trace_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for request in (
        WriteRequest(7, []),
        WriteRequest(7, [], "req-1"),
        WriteRequest(7, [], "req-1", trace_parent),
        WriteRequest(7, [], None, trace_parent),
        WriteRequest(8, [], None, None, after=7),
        WriteRequest(8, [], "req-1", trace_parent, after=7),
    ):
        assert decode_to_writer(encode(request)[FRAME.size :]) == request
    # Tracing off, the frame is the one it was before tracing existed.
    assert pickle.loads(encode(WriteRequest(7, [], "req-1"))[FRAME.size :]) == ("w", 7, [], "req-1")


def test_the_writers_figures_come_back_equal() -> None:
    stats = WriterStats(slow_batch_s=60.0)
    report = StatsReport(stats.snapshot(queued_requests=3, one_statement=(41, 2), oversold_lines=5))
    back = decode_from_writer(encode(report)[FRAME.size :])
    assert back == report
    assert isinstance(back, StatsReport) and back.snapshot.one_statement == (41, 2)
    assert back.snapshot.oversold_lines == 5
    # A writer peer of the release before: its figures without the oversold lines still decode.
    earlier = pickle.dumps(("m", report.snapshot.plain()[:5]), protocol=pickle.HIGHEST_PROTOCOL)
    old = decode_from_writer(earlier)
    assert isinstance(old, StatsReport) and old.snapshot.oversold_lines == 0


def test_a_peer_hears_the_figures_in_the_shape_the_release_before_decodes() -> None:
    """That release's decoder takes exactly five fields and drops the link on any other shape: a
    relay of it, during a rolling upgrade, would lose its link every second."""
    report = StatsReport(WriterStats(slow_batch_s=60.0).snapshot(3, (41, 2), oversold_lines=5))
    sent = pickle.loads(encode_for_peers(report)[FRAME.size :])
    assert sent[0] == "m" and len(sent[1]) == 5 and sent[1] == report.snapshot.plain()[:5]


def test_a_name_no_member_has_is_refused_not_taken() -> None:
    """Names become members by a dict's lookup; one not in it still fails as the Enum's call does."""
    with pytest.raises(ValueError, match=r"stock\.teleport"):
        event_fields_from_values("e-1", "pos/1", "stock.teleport", NOW.isoformat(), "s", (), *(None,) * 10)
    with pytest.raises(ValueError, match="perhaps"):
        _result_from_values("e-1", "pos/1", "s", "perhaps", None, (), 1, None)
    with pytest.raises(ValueError, match="bad_luck"):
        _result_from_values("e-1", "pos/1", "s", "rejected", "bad_luck", (), 1, None)
    with pytest.raises(ValueError, match="never"):
        _result_from_values("e-1", "pos/1", "s", "duplicate", None, (), 1, ("never", None, 1))
