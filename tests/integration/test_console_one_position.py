"""A store's page of one SKU (CONTRACT §8), in process, on both databases: every figure at one
position (the levels at the top, the explanation and the timeline's last point agree even when a
write lands between the page's reads of the API), and a timeline as large as the settings allow."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import orjson
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


def test_a_write_between_the_pages_reads_does_not_split_its_figures(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    ledger = build_ledger(settings)
    ledger.start()
    store = unique("shop")
    try:
        app = create_asgi(ledger, settings, intake_limits(settings))
        ledger.submit_and_wait([ev.stock_event(unique("r"), "stock.receipt", store, [("A", 10)])])
        explain = ledger.explain

        def explained_then_received(*args: Any, **kwargs: Any) -> Any:
            answer = explain(*args, **kwargs)
            ledger.submit_and_wait([ev.stock_event(unique("r"), "stock.receipt", store, [("A", 1)])])
            return answer

        ledger.explain = explained_then_received  # type: ignore[method-assign]
        html = _page(app, f"/ui/stores/{store}/skus/A")
    finally:
        ledger.stop()

    top = int(re.search(r'data-figure="on_hand">(-?\d+)<', html).group(1))  # type: ignore[union-attr]
    why = int(re.search(r'data-explain="on_hand">(-?\d+)<', html).group(1))  # type: ignore[union-attr]
    plot = orjson.loads(html.split('id="timeline-data">', 1)[1].split("</script>", 1)[0])
    assert (top, why, plot["points"][-1]["on_hand"]) == (10, 10, 10)


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
