"""`ledger rebuild` and `ledger verify` with reservations across stores: a command's parts are one
event in the log (one position, one key), replayed into the same tables the writer kept."""

from __future__ import annotations

import functools

from support import api, db
from support import events as ev
from support.ids import unique
from support.server import run_ledger_command

from ledger.rebuild import RebuildLimits, parts, rebuild
from ledger.storage.opening import open_recorder


def _events_across_stores(client, s1: str, s2: str, s3: str) -> None:
    """Reservations and sourcing across three stores: events of one, two and three entries."""
    for store in (s1, s2, s3):
        api.record(client, ev.receipt(store, ("A", 3), ("B", 3)))
    lines = [
        {"store": s1, "sku": "A", "qty": 2},
        {"store": s2, "sku": "B", "qty": 1},
        {"store": s3, "sku": "A", "qty": 1},
    ]
    assert client.post("/v1/reservations", json={"reservation_id": "R1", "lines": lines}).status_code == 201
    short = [{"store": s1, "sku": "A", "qty": 2}, {"store": s2, "sku": "B", "qty": 1}]
    assert client.post("/v1/reservations", json={"reservation_id": "R2", "lines": short}).status_code == 409
    api.record(client, ev.shipment(s1, ("A", 1), reservation_id="R1"))
    sourced = {
        "lines": ev.lines(("A", 4), ("B", 2)),
        "stores": [s1, s2, s3],
        "channel": "online",
        "reserve": {"reservation_id": "R3"},
    }
    assert client.post("/v1/sourcing", json=sourced).status_code == 200
    assert client.post("/v1/reservations/R1/release", json={}).status_code == 200


def test_a_rebuild_gives_the_same_tables_after_reservations_across_stores_and_sourcing(database_url, serve):
    server = serve(database_url)
    s1, s2, s3 = unique("s1"), unique("s2"), unique("s3")
    with server.client() as client:
        _events_across_stores(client, s1, s2, s3)
        api.record(client, ev.transfer(s3, s1, "T-1", ("B", 1)))
    assert server.stop() is not None
    kept = db.dump_projections(database_url)
    placing = {row["position"] for row in kept["ledger_history"] if row["type"] == "stock.reservation"}
    assert len(placing) == 2  # R1's three parts at one position, R3's at another
    assert len({(row["source"], row["event_id"]) for row in kept["ledger_event_keys"]}) == len(
        kept["ledger_event_keys"]
    )
    rebuilt = run_ledger_command(database_url, "rebuild", "--quiet")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert db.dump_projections(database_url) == kept
    verified = run_ledger_command(database_url, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_fill_over_processes_gives_the_same_tables_whichever_way_the_stores_are_split(
    postgres, serve, monkeypatch
):
    """The fill spread over processes by store (ledger/rebuild/parts.py): an event's entries at
    stores replayed by different processes keep one position, one key, and history rows numbered
    in log order, for every way of splitting the stores (the rebuild's own process takes the
    first part and every store not in the others)."""
    database_url = postgres.create_database()
    server = serve(database_url)
    stores = [unique("s1"), unique("s2"), unique("s3")]
    with server.client() as client:
        _events_across_stores(client, *stores)
        api.record(client, ev.transfer(stores[2], stores[0], "T-1", ("B", 1)))
    assert server.stop() is not None
    kept = db.dump_projections(database_url)
    entries = db.event_count(database_url)
    stores_of = {}
    for row in kept["ledger_history"]:
        stores_of.setdefault(row["position"], []).append(row["store_id"])
    assert any(len(set(named)) == 3 for named in stores_of.values())  # an event of three entries

    opening = functools.partial(open_recorder, database_url, 2, 30, create_tables=False)
    one_each = [[frozenset([store]) for store in order] for order in (stores, stores[::-1])]
    one_and_two = [
        split
        for one in stores
        for split in (
            [frozenset([one]), frozenset(stores) - {one}],
            [frozenset(stores) - {one}, frozenset([one])],
        )
    ]
    for split in one_and_two + one_each:  # one other process, then two
        monkeypatch.setattr(parts, "split_stores", lambda recorder, processes, split=split: split)
        recorder = opening()
        try:
            report = rebuild(recorder, RebuildLimits(batch_entries=3, processes=len(split)), None, opening)
        finally:
            recorder.close()
        assert report.entries == entries
        assert db.dump_projections(database_url) == kept, split
