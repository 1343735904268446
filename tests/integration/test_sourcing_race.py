"""Real processes racing sourcing with `reserve`, reservations across stores and plain reservations
on scarce stock, through two `ledger serve` instances on one database: no unit is reserved twice,
and every accepted answer is exactly what the levels and the reservations hold."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from support import api, db
from support import events as ev
from support.clients import Request, send_from_processes
from support.ids import unique

pytestmark = pytest.mark.slow

STORES = 4
STOCK_UNITS = 6  # of each SKU at each store: 24 units of A and of B in all
SOURCING_PROCESSES = 3
SOURCING_ORDERS_PER_PROCESS = 8  # each 2 A and 1 B: 48 A asked for, twice what there is
PLAIN_PROCESSES = 2
PLAIN_PER_PROCESS = 16  # each 1 A at one store
ACROSS_PROCESSES = 2
ACROSS_PER_PROCESS = 8  # each 1 A at one store and 2 B at the next (POST /v1/reservations)


def test_sourcing_across_stores_and_plain_reservations_never_oversell(database_url, serve) -> None:
    a, b = serve(database_url), serve(database_url)
    stores = [unique(f"race{n}") for n in range(STORES)]
    with a.client() as client:
        for store in stores:
            api.record(client, ev.receipt(store, ("A", STOCK_UNITS), ("B", STOCK_UNITS)))

    def sourcing(process: int, number: int, url: str) -> Request:
        body: dict[str, Any] = {
            "lines": ev.lines(("A", 2), ("B", 1)),
            "stores": stores[process % STORES :] + stores[: process % STORES],
            "max_stores": 2,
            "reserve": {"reservation_id": f"src-{process}-{number}"},
        }
        return (url, "/v1/sourcing", body)

    def plain(process: int, number: int, url: str) -> Request:
        store = stores[(process + number) % STORES]
        body = {"reservation_id": f"web-{process}-{number}", "lines": ev.lines(("A", 1))}
        return (url, f"/v1/stores/{store}/reservations", body)

    def across(process: int, number: int, url: str) -> Request:
        first = (process * ACROSS_PER_PROCESS + number) % STORES
        body = {
            "reservation_id": f"across-{process}-{number}",
            "lines": [
                {"store": stores[first], "sku": "A", "qty": 1},
                {"store": stores[(first + 1) % STORES], "sku": "B", "qty": 2},
            ],
        }
        return (url, "/v1/reservations", body)

    urls = [a.url, b.url]
    plans = [
        [sourcing(p, n, urls[p % 2]) for n in range(SOURCING_ORDERS_PER_PROCESS)]
        for p in range(SOURCING_PROCESSES)
    ]
    plans += [[plain(p, n, urls[p % 2]) for n in range(PLAIN_PER_PROCESS)] for p in range(PLAIN_PROCESSES)]
    plans += [
        [across(p, n, urls[(p + 1) % 2]) for n in range(ACROSS_PER_PROCESS)] for p in range(ACROSS_PROCESSES)
    ]
    answers = send_from_processes(plans)

    expected: Counter[tuple[str, str]] = Counter()
    placed = refused = 0
    placed_across = 0
    for plan, plan_answers in zip(plans, answers, strict=True):
        for (_, path, _), (status, answer) in zip(plan, plan_answers, strict=True):
            if status in (200, 201):
                placed += 1
                if path == "/v1/sourcing":
                    parts = answer["reservation"]["stores"]
                elif path == "/v1/reservations":
                    parts = answer["stores"]
                    placed_across += 1
                    assert len(parts) == 2, answer  # all lines or none
                else:
                    parts = [answer]
                for part in parts:
                    for line in part["lines"]:
                        expected[(part["store_id"], line["sku"])] += line["qty"]
                if path == "/v1/sourcing":
                    taken = Counter()
                    for allocation in answer["allocations"]:
                        for line in allocation["lines"]:
                            taken[line["sku"]] += line["qty"]
                    assert taken == {"A": 2, "B": 1}, answer
            else:
                refused += 1
                assert status == 409 and answer["type"] == "insufficient-stock", (status, answer)
    assert placed and refused and placed_across, (placed, refused, placed_across)  # scarce: all happened
    for store in stores:
        levels = db.level_rows(database_url, store)
        for sku in ("A", "B"):
            level = levels[sku]
            assert level["on_hand"] == STOCK_UNITS
            assert 0 <= level["reserved"] <= level["on_hand"], (store, sku, level)  # never oversold
            assert level["reserved"] == expected[(store, sku)], (store, sku, level)
    # The reservations hold exactly what the levels say is reserved.
    marks = ", ".join("%s" for _ in stores)
    rows = db.query(
        database_url,
        f"SELECT store_id, lines FROM ledger_reservations WHERE store_id IN ({marks})",
        tuple(stores),
    )
    held: Counter[tuple[str, str]] = Counter()
    for row in rows:
        for sku, qty, shipped, released in orjson.loads(row["lines"]):
            held[(row["store_id"], sku)] += qty - shipped - released
    assert held == expected
