"""A store's page of one SKU (CONTRACT §8), in process, on both databases: every figure at one
position (the levels at the top, the explanation and the timeline's last point agree even when a
write lands between the page's reads of the API), and a timeline as large as the settings allow."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from support import events as ev
from support.ids import unique

from ledger.api.app import create_asgi
from ledger.bootstrap import build_ledger, intake_limits
from ledger.config import Settings


def _page(app: Any, path: str) -> str:
    async def get() -> str:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            response = await client.get(path)
            assert response.status_code == 200, response.text
            return response.text

    return asyncio.run(get())


@pytest.mark.parametrize("axis", ["recorded", "occurred"])
def test_a_write_between_the_pages_reads_does_not_split_its_figures(database_url: str, axis: str) -> None:
    """A receipt, dated before everything (an import), lands between the page's reads: the page
    shows it in every figure or in none. (On the business-time axis it is in the levels of every
    later point: leaving its own point out was not enough.)"""
    settings = Settings(database_url=database_url)
    ledger = build_ledger(settings)
    ledger.start()
    store = unique("shop")
    try:
        app = create_asgi(ledger, settings, intake_limits(settings))
        ledger.submit_and_wait([ev.stock_event(unique("r"), "stock.receipt", store, [("A", 10)])])
        timeline = ledger.timeline
        landed: list[bool] = []

        def received_then_read(*args: Any, **kwargs: Any) -> Any:
            # Once, between the page's other reads and its timeline's (read last, or beside the
            # levels; they were read side by side with the explanation).
            if not landed:
                landed.append(True)
                early = ev.stock_event(unique("r"), "stock.receipt", store, [("A", 1)])
                early = dataclasses.replace(early, time=datetime(2020, 1, 1, tzinfo=UTC))
                ledger.submit_and_wait([early])
            return timeline(*args, **kwargs)

        ledger.timeline = received_then_read  # type: ignore[method-assign]
        html = _page(app, f"/ui/stores/{store}/skus/A?axis={axis}")
    finally:
        ledger.stop()

    top = int(re.search(r'data-figure="on_hand">(-?\d+)<', html).group(1))  # type: ignore[union-attr]
    why = int(re.search(r'data-explain="on_hand">(-?\d+)<', html).group(1))  # type: ignore[union-attr]
    plot = orjson.loads(html.split('id="timeline-data">', 1)[1].split("</script>", 1)[0])
    assert landed
    assert top == why == plot["points"][-1]["on_hand"], (top, why, plot["points"])


def test_the_largest_timeline_the_settings_allow_is_a_page(database_url: str) -> None:
    """10,000 points whose ids, sources and references are 256 characters each: the API served
    them, and the page answered 500 (its read of the API stopped at 8 MiB)."""
    points_max = 10_000
    settings = Settings(database_url=database_url, timeline_points_max=points_max)
    ledger = build_ledger(settings)
    ledger.start()
    store = unique("shop")
    long = "x" * 200
    try:
        app = create_asgi(ledger, settings, intake_limits(settings))
        for first in range(0, points_max, 1000):
            ledger.submit_and_wait(
                [
                    ev.stock_event(
                        f"{long}-{n:055d}",
                        "stock.receipt",
                        store,
                        [("A", 1)],
                        source=f"{long}/{n:055d}",
                        reference=f"{long}-{n:055d}",
                    )
                    for n in range(first, first + 1000)
                ]
            )
        html = _page(app, f"/ui/stores/{store}/skus/A")
    finally:
        ledger.stop()

    plot = orjson.loads(html.split('id="timeline-data">', 1)[1].split("</script>", 1)[0])
    assert len(plot["points"]) == points_max and plot["points"][-1]["on_hand"] == points_max
    assert len(plot["points"][-1]["reference"]) == 256
