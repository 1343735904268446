"""A transfer is one event, so it has one position everywhere (CONTRACT §1 and §3): its result,
its history entries at both stores, both stores' stock answers, past levels, a duplicate's
original, another instance's reads, and the tables a rebuild makes from the log.

It is recorded as two log entries (the receiving store's first); the event's position is the
second one's notification id, so the first one's id is a position at which neither half shows.
"""

from __future__ import annotations

import httpx
from support import api, db
from support import events as ev
from support.ids import unique
from support.server import run_ledger_command

# The rebuild's page of the log, set for it here, so that a transfer can straddle two pages.
NOTIFICATIONS_PER_PAGE = 2000

TRANSFER = "stock.transfer"
INCOMING = "stock.transfer_incoming"


def _levels_at(client: httpx.Client, store: str, position: int) -> dict[str, tuple[int, int, int, int]]:
    items = client.get(f"/v1/stores/{store}/stock", params={"sku": ["A", "B"], "position": position})
    assert items.status_code == 200, items.text
    return {item["sku"]: api.levels_tuple(item) for item in items.json()["items"]}


def _entries_of(client: httpx.Client, store: str, event_id: str) -> list[tuple[int, str, str]]:
    """(position, type, sku) of one event's entries in a store's history, in history order (both
    halves of a transfer carry the transfer's event id)."""
    return [
        (entry["position"], entry["type"], entry["sku"])
        for entry in api.history(client, store)
        if entry["event_id"] == event_id
    ]


def test_a_transfer_has_one_position_in_its_result_both_histories_and_both_stock_answers(database_url, serve):
    server = serve(database_url)
    sender, receiver = unique("wh"), unique("shop")
    with server.client() as client:
        api.record(client, ev.receipt(sender, ("A", 10), ("B", 5)))
        api.record(client, ev.receipt(receiver, ("A", 1)))
        transfer = ev.transfer(sender, receiver, "T-1", ("B", 2), ("A", 3))  # lines not in SKU order
        [result] = api.record(client, transfer)
        position = result["position"]

        # Both halves carry the event's position, each in the event's line order.
        assert _entries_of(client, sender, transfer["id"]) == [
            (position, TRANSFER, "B"),
            (position, TRANSFER, "A"),
        ]
        assert _entries_of(client, receiver, transfer["id"]) == [
            (position, INCOMING, "B"),
            (position, INCOMING, "A"),
        ]
        # Each store's stock answers name the event's position (nothing was recorded after it).
        for store in (sender, receiver):
            for sku in "AB":
                assert api.level(client, store, sku, min_position=position)["position"] == position
            items = client.get(f"/v1/stores/{store}/stock", params={"sku": ["A", "B"]}).json()["items"]
            assert [item["position"] for item in items] == [position, position]
        across = client.get("/v1/stock/A").json()
        assert across["position"] == position
        assert across["total"]["incoming"] == 3

        # The move is atomic in every read: just before its position neither half shows, at it both.
        assert _levels_at(client, sender, position - 1) == {"A": (10, 0, 10, 0), "B": (5, 0, 5, 0)}
        assert _levels_at(client, receiver, position - 1) == {"A": (1, 0, 1, 0), "B": (0, 0, 0, 0)}
        assert _levels_at(client, sender, position) == {"A": (7, 0, 7, 0), "B": (3, 0, 3, 0)}
        assert _levels_at(client, receiver, position) == {"A": (1, 0, 1, 3), "B": (0, 0, 0, 2)}

        [again] = api.post_events(client, transfer)
        assert again["outcome"] == "duplicate"
        assert again["original"]["position"] == position


def test_transfers_in_one_batch_keep_one_position_each_on_another_instance_and_after_a_rebuild(
    database_url, serve
):
    server = serve(database_url)
    reader = serve(database_url)  # another instance: it catches up from the history, by position
    first, second, third = unique("s1"), unique("s2"), unique("s3")
    with server.client() as client, reader.client() as other:
        api.record(client, ev.receipt(first, ("A", 10)), ev.receipt(second, ("A", 10)))
        # The other instance holds the receiving stores' levels from before the transfers.
        assert api.levels_tuple(api.level(other, second, "A", min_position=2)) == (10, 0, 10, 0)
        assert api.levels_tuple(api.level(other, third, "A", min_position=2)) == (0, 0, 0, 0)
        transfers = [
            ev.transfer(first, second, "T-1", ("A", 2)),
            ev.transfer(second, third, "T-2", ("A", 5)),
            ev.transfer(first, third, "T-3", ("A", 99)),  # refused: one entry, at the sending store
            ev.transfer(first, third, "T-4", ("A", 1)),
        ]
        results = api.post_events(client, *transfers, transfers[0])  # the first again, in the same batch
        outcomes = [r["outcome"] for r in results]
        assert outcomes == ["accepted", "accepted", "rejected", "accepted", "duplicate"]
        positions = [r["position"] for r in results[:4]]
        assert positions == sorted(set(positions))
        assert results[4]["original"]["position"] == positions[0]
        for transfer, result in zip(transfers, results, strict=False):
            sender, receiver = transfer["subject"], transfer["data"]["to_store"]
            halves = _entries_of(client, sender, transfer["id"])
            if result["outcome"] == "accepted":
                halves += _entries_of(client, receiver, transfer["id"])
            assert {p for p, _, _ in halves} == {result["position"]}, transfer["data"]["transfer_id"]

        last = positions[-1]
        for store, expected in ((first, (7, 0, 7, 0)), (second, (5, 0, 5, 2)), (third, (0, 0, 0, 6))):
            mine = api.level(client, store, "A", min_position=last)
            theirs = api.level(other, store, "A", min_position=last)
            assert api.levels_tuple(mine) == api.levels_tuple(theirs) == expected, store
        assert api.history(other, third) == api.history(client, third)

        # A transfer whose two entries fall on two pages of the rebuild's read of the log.
        filler = NOTIFICATIONS_PER_PAGE - 1 - db.event_count(database_url)
        for start in range(0, filler, 1000):
            count = min(1000, filler - start)
            api.record(client, *(ev.receipt(third, ("B", 1)) for _ in range(count)))
        [straddling] = api.record(client, ev.transfer(third, first, "T-5", ("B", 3)))
        assert straddling["position"] == NOTIFICATIONS_PER_PAGE + 1
        history = {store: api.history(client, store) for store in (first, second, third)}
        assert history[first][-1]["position"] == history[third][-1]["position"] == straddling["position"]

    assert server.stop() is not None and reader.stop() is not None
    kept = db.dump_projections(database_url)
    rebuilt = run_ledger_command(
        database_url,
        "rebuild",
        "--quiet",
        env={"LEDGER_REBUILD_BATCH_ENTRIES": str(NOTIFICATIONS_PER_PAGE)},
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert db.dump_projections(database_url) == kept

    server.start()
    with server.client() as client:
        assert {store: api.history(client, store) for store in history} == history
