"""`ledger rebuild` and `ledger verify` with reservations across stores: a command's parts are one
event in the log (one position, one key), replayed into the same tables the writer kept."""

from __future__ import annotations

from support import api, db
from support import events as ev
from support.ids import unique
from support.server import run_ledger_command


def test_a_rebuild_gives_the_same_tables_after_reservations_across_stores_and_sourcing(database_url, serve):
    server = serve(database_url)
    s1, s2, s3 = unique("s1"), unique("s2"), unique("s3")
    with server.client() as client:
        for store in (s1, s2, s3):
            api.record(client, ev.receipt(store, ("A", 3), ("B", 3)))
        lines = [
            {"store": s1, "sku": "A", "qty": 2},
            {"store": s2, "sku": "B", "qty": 1},
            {"store": s3, "sku": "A", "qty": 1},
        ]
        assert (
            client.post("/v1/reservations", json={"reservation_id": "R1", "lines": lines}).status_code == 201
        )
        short = [{"store": s1, "sku": "A", "qty": 2}, {"store": s2, "sku": "B", "qty": 1}]
        assert (
            client.post("/v1/reservations", json={"reservation_id": "R2", "lines": short}).status_code == 409
        )
        api.record(client, ev.shipment(s1, ("A", 1), reservation_id="R1"))
        sourced = {
            "lines": ev.lines(("A", 4), ("B", 2)),
            "stores": [s1, s2, s3],
            "channel": "online",
            "reserve": {"reservation_id": "R3"},
        }
        assert client.post("/v1/sourcing", json=sourced).status_code == 200
        assert client.post("/v1/reservations/R1/release", json={}).status_code == 200
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
