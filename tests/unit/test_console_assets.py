"""The console's assets at /ui/static/{name} (ledger/api/console/pages.py): what a name asked for
costs the process. The path is held to no rate (ledger/api/gate.py: UNRATED_PREFIX), so a reader
token may ask for as many names as it likes."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from ledger.api.console import pages

NAMES = 10_000
NAME_CHARS = 200  # a name a file could have (at most 255 bytes on Linux)
# What may stay behind after every name was answered: far below what keeping the names would take
# (NAMES * NAME_CHARS = 2 MB), far above what a pass through the route leaves by chance.
KEPT_BYTES_MAX = NAMES * NAME_CHARS // 20
LONG_NAME_CHARS = 1_000  # longer than a file's name may be: it was an OSError, answered 500


async def _bytes_kept_after_asking(count: int) -> int:
    answer = await pages.static_asset("warm-up.js", None)  # the route's own first-call costs
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for number in range(count):
        answer = await pages.static_asset(f"{number:0{NAME_CHARS}d}.js", None)
        assert answer.status_code == 404
    del answer
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


def test_names_that_are_no_asset_are_answered_404_and_not_remembered() -> None:
    tracemalloc.start()
    try:
        kept = asyncio.run(_bytes_kept_after_asking(NAMES))
    finally:
        tracemalloc.stop()
    assert kept < KEPT_BYTES_MAX, f"{kept} bytes kept after {NAMES} names that are no asset"


def test_a_name_longer_than_a_file_may_have_is_answered_404() -> None:
    answer = asyncio.run(pages.static_asset("x" * LONG_NAME_CHARS + ".js", None))
    assert answer.status_code == 404


def test_every_asset_the_pages_name_is_served() -> None:
    for name in ("console.css", "timeline.js", "uPlot.iife.min.js", "uPlot.min.css"):
        answer = asyncio.run(pages.static_asset(name, None))
        assert answer.status_code == 200, name
        assert answer.body
