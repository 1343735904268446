"""Oversold lines are counted, every one, and logged at most OVERSOLD_LINES_LOGGED_PER_WINDOW a
window; those left out are said in the next window's first line (ledger/writer/oversold.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from ledger.domain.model import Entry, EventType, Line, LineEffect, Outcome, StockEvent
from ledger.writer.oversold import OVERSOLD_LINES_LOGGED_PER_WINDOW, OVERSOLD_LOG_WINDOW_S, OversoldWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sale(number: int, *effects: LineEffect) -> Entry:
    event = StockEvent(
        event_id=f"pos-{number}",
        source="pos/store-1",
        type=EventType.POS_SALE,
        time=datetime(2026, 12, 6, tzinfo=UTC),
        store_id="store-1",
        lines=tuple(Line(effect.sku, effect.qty_units) for effect in effects),
    )
    return Entry(event, Outcome.ACCEPTED, effects)


def test_only_oversold_lines_count_and_each_is_said_with_its_store_sku_and_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = OversoldWatch(Clock())
    with caplog.at_level(logging.WARNING, logger="ledger.writer"):
        watch.note(
            [
                sale(1, LineEffect("A", 2, -2), LineEffect("B", 3, -3, oversold=True)),
                sale(2, LineEffect("A", 1, -1)),
            ]
        )
    assert watch.lines == 1
    [said] = [record.getMessage() for record in caplog.records]
    assert said.startswith("oversold: 3 of B left store store-1 past what it held (stock.pos_sale pos-1 from")
    assert "GET /v1/stores/store-1/stock/B/explain" in said


def test_a_flood_is_counted_whole_and_logged_a_window_at_a_time(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    watch = OversoldWatch(clock)
    flood = [
        sale(n, LineEffect("A", 1, -1, oversold=True)) for n in range(OVERSOLD_LINES_LOGGED_PER_WINDOW + 30)
    ]
    with caplog.at_level(logging.WARNING, logger="ledger.writer"):
        watch.note(flood)
        assert len(caplog.records) == OVERSOLD_LINES_LOGGED_PER_WINDOW
        clock.now += OVERSOLD_LOG_WINDOW_S
        watch.note([sale(999, LineEffect("A", 1, -1, oversold=True))])
    assert watch.lines == OVERSOLD_LINES_LOGGED_PER_WINDOW + 31
    summary, line = (record.getMessage() for record in caplog.records[-2:])
    assert summary.startswith("30 more oversold lines were recorded in the last 60 s and not logged")
    assert "pos-999" in line
