"""`ledger rebuild` replays the event log into projection tables equal to those the service kept."""

from __future__ import annotations

import sqlite3
import time

import orjson
import psycopg
from support import api, db
from support import events as ev
from support.ids import unique
from support.reservation_lines import recomputed_from, rows_of_index
from support.server import run_ledger_command

EXPIRY_DEADLINE_S = 20.0


def _mixed_workload(client, shop: str, warehouse: str) -> None:
    """Every event type, accepted and rejected, over two stores."""
    api.record(client, ev.receipt(warehouse, ("A", 100), ("B", 50), ("C", 10), reference="GRN-1"))
    api.record(client, ev.receipt(shop, ("A", 5), ("B", 5)))
    api.record(client, ev.transfer(warehouse, shop, "T-1", ("A", 20), ("C", 4)))
    api.record(client, ev.receipt(shop, ("A", 15), transfer_id="T-1"))  # part of the transfer arrives
    [rejected_transfer] = api.post_events(client, ev.transfer(warehouse, shop, "T-2", ("C", 99)))
    assert rejected_transfer["outcome"] == "rejected"
    api.record(client, ev.sale(shop, ("A", 2), order_id="O-1"))
    [rejected_sale] = api.post_events(client, ev.sale(shop, ("B", 50), order_id="O-2"))
    assert rejected_sale["reason"] == "insufficient_stock"
    api.record(client, ev.pos_sale(shop, ("B", 7), reference="till 4"))  # oversold
    api.record(client, ev.stock_return(shop, ("A", 1), order_id="O-1"))
    api.record(client, ev.adjustment(warehouse, "damaged", ("B", -3)))
    api.record(client, ev.adjustment(warehouse, "found", ("C", 2)))
    api.record(client, ev.count(warehouse, ("A", 77), ("B", 40), reference="cycle count"))

    assert api.reserve(client, shop, "R-ship", ("A", 6), ("B", 1), order_id="O-3").status_code == 409
    assert api.reserve(client, shop, "R-ship", ("A", 6), order_id="O-3").status_code == 201
    api.record(client, ev.shipment(shop, ("A", 2), reservation_id="R-ship", order_id="O-3"))  # partial
    api.record(client, ev.shipment(shop, ("A", 1), reservation_id="R-ship", order_id="O-3"))
    release = client.post(f"/v1/stores/{shop}/reservations/R-ship/release", json={})
    assert release.status_code == 200 and release.json()["status"] == "released", release.text

    assert api.reserve(client, warehouse, "R-full", ("A", 3), ("C", 1)).status_code == 201
    api.record(client, ev.shipment(warehouse, ("A", 3), ("C", 1), reservation_id="R-full"))
    api.record(client, ev.release(warehouse, "R-full"))  # everything is shipped: an accepted no-op

    assert api.reserve(client, warehouse, "R-some", ("A", 4), ("B", 4)).status_code == 201
    api.record(client, ev.release(warehouse, "R-some", ("B", 4)))
    conflict = api.reserve(client, warehouse, "R-some", ("A", 1))
    assert conflict.status_code == 409

    [unknown_release] = api.post_events(client, ev.release(shop, "R-nobody"))
    assert unknown_release["reason"] == "unknown_reservation"
    api.record(client, ev.shipment(shop, ("A", 1), reservation_id="R-nobody"))  # flagged unknown
    duplicate = ev.receipt(shop, ("C", 1), event_id="dup-1")
    api.record(client, duplicate)
    assert api.post_events(client, duplicate)[0]["outcome"] == "duplicate"
    # Policies and channels (CONTRACT §6): a default, a SKU's own, one cleared; reservations under a
    # channel shipped, released and expiring, so that each channel's reserved units move every way.
    api.put_policy(client, shop, "*", {"safety_stock": 1, "channels": {"online": {"quota_pct": 50}}})
    api.put_policy(client, shop, "B", {"channels": {"web": {"quota_units": 2}}})
    api.put_policy(client, warehouse, "A", {"safety_stock": 3})
    api.put_policy(client, warehouse, "A", {})
    api.record(client, ev.receipt(shop, ("B", 10), ("C", 4)))
    assert api.reserve(client, shop, "R-online", ("A", 2), ("C", 1), channel="online").status_code == 201
    api.record(client, ev.shipment(shop, ("A", 1), reservation_id="R-online"))
    assert api.reserve(client, shop, "R-web", ("B", 2), channel="web").status_code == 201
    assert api.reserve(client, shop, "R-web-2", ("B", 1), channel="web").status_code == 409
    api.record(client, ev.release(shop, "R-web", ("B", 1)))
    assert (
        api.reserve(client, shop, "R-expiring", ("C", 1), expires_at=ev.now_rfc3339(0.5), channel="online")
    ).status_code == 201


def _wait_for_expiry(client, store: str, reservation_id: str) -> None:
    deadline = time.monotonic() + EXPIRY_DEADLINE_S
    while time.monotonic() < deadline:
        response = client.get(f"/v1/stores/{store}/reservations/{reservation_id}")
        if response.json()["status"] == "expired":
            return
        time.sleep(0.1)
    raise AssertionError(f"{reservation_id} did not expire within {EXPIRY_DEADLINE_S} s")


def _rewrite_log_in_the_first_format(database_url: str) -> None:
    """Every stored entry as format 1 had it: `"v": 1`, no `event_entries_after`, no `principal`."""
    sqlite = database_url.startswith("sqlite")
    id_column = "rowid" if sqlite else "notification_id"
    rows = db.query(database_url, f"SELECT {id_column} AS id, state FROM {db.EVENTS_TABLE}")
    rewritten = []
    for row in rows:
        state = orjson.loads(bytes(row["state"]))
        assert state["v"] == 4
        state["v"] = 1
        state.pop("event_entries_after", None)
        state.pop("principal", None)
        rewritten.append((orjson.dumps(state), row["id"]))
    update = f"UPDATE {db.EVENTS_TABLE} SET state = %s WHERE {id_column} = %s"
    if sqlite:
        conn = sqlite3.connect(db.sqlite_path(database_url))
        try:
            conn.executemany(update.replace("%s", "?"), rewritten)
            conn.commit()
        finally:
            conn.close()
        return
    with psycopg.connect(database_url) as pg:
        pg.cursor().executemany(update, rewritten)


def _without_principals(tables: dict[str, list[dict[str, object]]]) -> dict[str, list[dict[str, object]]]:
    return {
        table: [row | {"principal": None} if "principal" in row else row for row in rows]
        for table, rows in tables.items()
    }


def test_rebuilding_the_projections_from_the_log_gives_the_same_tables(database_url, serve):
    created = run_ledger_command(database_url, "tokens", "create", "--name", "rebuilder", "--role", "admin")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    server = serve(database_url, {"LEDGER_EXPIRY_INTERVAL_MS": "100"})
    shop, warehouse = unique("shop"), unique("wh")
    with server.client() as client:
        client.headers["authorization"] = f"Bearer {token}"
        _mixed_workload(client, shop, warehouse)
        _wait_for_expiry(client, shop, "R-expiring")
        history = api.history(client, shop) + api.history(client, warehouse)
    assert {e["type"] for e in history} >= {
        "stock.receipt",
        "stock.sale",
        "stock.pos_sale",
        "stock.reservation",
        "stock.reservation_release",
        "stock.reservation_expired",
        "stock.shipment",
        "stock.return",
        "stock.adjustment",
        "stock.count",
        "stock.transfer",
        "stock.policy_changed",
    }
    assert any(e["oversold"] for e in history) and any(e["unknown_reservation"] for e in history)
    # Who did it: the token for what came over HTTP, the ledger itself for the expiry.
    assert {e["principal"] for e in history} == {"rebuilder", "ledger"}
    assert {e["principal"] for e in history if e["type"] == "stock.reservation_expired"} == {"ledger"}
    assert server.stop() is not None

    kept = db.dump_projections(database_url)
    assert {(row["store_id"], row["sku"]) for row in kept["ledger_policies"]} == {
        (shop, "*"),
        (shop, "B"),
        (warehouse, "A"),
    }
    assert any(row["channels"] for row in kept["ledger_levels"]), "a channel holds units at the end"
    # Explain's index of reservation lines: a line still holding units, and lines that hold none.
    lines = kept["ledger_reservation_lines"]
    assert rows_of_index(lines) == recomputed_from(kept["ledger_reservations"])
    assert {row["remaining"] > 0 for row in lines} == {True, False}
    recorded_events = db.event_count(database_url)
    # Every recorded event, refused ones included, is in the audit trail, at its position: the
    # notification id of its last entry (an accepted transfer's first entry, the incoming one at
    # the receiving store, has an id that is no event's position).
    transfers = [
        row["position"]
        for row in kept["ledger_history"]
        if row["type"] == "stock.transfer" and row["outcome"] == "accepted"
    ]
    incoming_ids = {position - 1 for position in transfers}
    assert incoming_ids
    event_positions = set(range(1, recorded_events + 1)) - incoming_ids
    assert {row["position"] for row in kept["ledger_history"]} == event_positions
    rebuilt = run_ledger_command(database_url, "rebuild", "--quiet")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"from {recorded_events} recorded events" in rebuilt.stdout
    assert db.dump_projections(database_url) == kept

    # A log an earlier version wrote (stored format 1, with no `event_entries_after` and no
    # principal) rebuilds to the same tables, with no principals: a transfer's incoming entry there
    # is always followed by the transfer's own.
    _rewrite_log_in_the_first_format(database_url)
    rebuilt = run_ledger_command(database_url, "rebuild", "--quiet")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert db.dump_projections(database_url) == _without_principals(kept)

    # The ledger serves the rebuilt tables as before.
    server.start()
    with server.client() as client:
        client.headers["authorization"] = f"Bearer {token}"
        served = api.history(client, shop) + api.history(client, warehouse)
        assert served == [entry | {"principal": None} for entry in history]
