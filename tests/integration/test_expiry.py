"""The service expires reservations itself, once, even with two instances on one database."""

from __future__ import annotations

import time

import pytest
from support import api, db
from support import events as ev
from support.ids import unique

pytestmark = pytest.mark.slow

EXPIRY_ENV = {"LEDGER_EXPIRY_INTERVAL_MS": "100"}
EXPIRY_DEADLINE_S = 20.0
RESERVATIONS = 8
KEPT_UNITS = RESERVATIONS + 2
AFTER_EXPIRY_WATCH_S = 1.5  # a good many expiry intervals of both instances


def _wait_until_expired(client, store: str, reservation_ids: list[str]) -> dict[str, dict]:
    deadline = time.monotonic() + EXPIRY_DEADLINE_S
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for reservation_id in reservation_ids:
            response = client.get(f"/v1/stores/{store}/reservations/{reservation_id}")
            assert response.status_code == 200, response.text
            if response.json()["status"] == "expired":
                seen[reservation_id] = response.json()
        if len(seen) == len(reservation_ids):
            return seen
        time.sleep(0.1)
    raise AssertionError(
        f"not expired within {EXPIRY_DEADLINE_S} s: {sorted(set(reservation_ids) - set(seen))}"
    )


def test_a_reservation_past_its_expiry_is_released_once_by_the_service(database_url, serve):
    a, b = serve(database_url, EXPIRY_ENV), serve(database_url, EXPIRY_ENV)
    store = unique("store")
    skus = [f"SKU-{i}" for i in range(RESERVATIONS)]
    ids = [f"cart-{i}" for i in range(RESERVATIONS)]
    with a.client() as client_a, b.client() as client_b:
        api.record(client_a, ev.receipt(store, *((sku, 5) for sku in skus), ("KEPT", KEPT_UNITS)))
        expires_at = ev.now_rfc3339(1.0)
        for index, (reservation_id, sku) in enumerate(zip(ids, skus, strict=True)):
            client = (client_a, client_b)[index % 2]
            response = api.reserve(
                client, store, reservation_id, (sku, 2), ("KEPT", 1), expires_at=expires_at
            )
            assert response.status_code == 201, response.text
            assert response.json()["expires_at"] is not None
        kept = api.reserve(client_a, store, "kept", ("KEPT", 1), expires_at=ev.now_rfc3339(3600))
        assert kept.status_code == 201, kept.text

        expired = _wait_until_expired(client_b, store, ids)
        time.sleep(AFTER_EXPIRY_WATCH_S)

        for reservation_id, sku in zip(ids, skus, strict=True):
            body = expired[reservation_id]
            assert body["status"] == "expired"
            assert {line["sku"]: line["remaining"] for line in body["lines"]} == {sku: 0, "KEPT": 0}
        entries = api.history(client_a, store, type="stock.reservation_expired")
        positions = {e["position"] for e in entries}
        # Exactly one expiry entry per line of each reservation, whichever instance recorded it.
        assert sorted((e["reservation_id"], e["sku"]) for e in entries) == sorted(
            [(r, s) for r, s in zip(ids, skus, strict=True)] + [(r, "KEPT") for r in ids]
        )
        for entry in entries:
            assert entry["outcome"] == "accepted"
            assert entry["reserved_delta"] == -(2 if entry["sku"] != "KEPT" else 1)
            assert entry["on_hand_delta"] == 0
        assert len(positions) <= RESERVATIONS
        expired_rows = db.scalar(
            database_url,
            "SELECT COUNT(*) AS n FROM ledger_history "
            "WHERE store_id = %s AND type = 'stock.reservation_expired'",
            (store,),
        )
        assert expired_rows == 2 * RESERVATIONS
        recorded = db.level_rows(database_url, store)
        assert {sku: row["reserved"] for sku, row in recorded.items()} == {
            **dict.fromkeys(skus, 0),
            "KEPT": 1,
        }
        # Each instance, once it has applied the last expiry, reads the same levels.
        head = max(positions)
        for client in (client_a, client_b):
            for sku in skus:
                assert api.levels_tuple(api.level(client, store, sku, min_position=head)) == (5, 0, 5, 0)
            # The reservation that has not expired keeps its unit.
            assert api.levels_tuple(api.level(client, store, "KEPT", min_position=head)) == (
                KEPT_UNITS,
                1,
                KEPT_UNITS - 1,
                0,
            )
        assert client_a.get(f"/v1/stores/{store}/reservations/kept").json()["status"] == "active"


def test_reservations_expire_while_the_writer_is_never_idle(database_url, serve):
    """With requests arriving all the time the writer always has a batch in flight; expiry must
    still run between batches, not only when the writer has nothing else to do."""
    import threading

    server = serve(database_url, EXPIRY_ENV)
    store = unique("store")
    stop = threading.Event()
    failures: list[str] = []

    def keep_reserving(worker: int) -> None:
        with server.client() as client:
            n = 0
            while not stop.is_set():
                n += 1
                response = api.reserve(client, store, f"load-{worker}-{n}", ("LOAD", 1))
                if response.status_code != 201:
                    failures.append(response.text)
                    return

    with server.client() as client:
        api.record(client, ev.receipt(store, ("LOAD", 1_000_000), ("CART", 3)))
        response = api.reserve(client, store, "cart", ("CART", 2), expires_at=ev.now_rfc3339(1.0))
        assert response.status_code == 201, response.text
        workers = [threading.Thread(target=keep_reserving, args=(i,)) for i in range(16)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(0.5)  # the load is running before the reservation is due
            expired = _wait_until_expired(client, store, ["cart"])
        finally:
            stop.set()
            for worker in workers:
                worker.join(30)
        assert not failures, failures[:3]
        assert expired["cart"]["lines"][0]["remaining"] == 0
        assert len(api.history(client, store, type="stock.reservation_expired")) == 1


def test_a_reservation_due_before_the_year_1000_expires_and_reads(database_url, serve):
    """Its `expires_at` was stored "999-...": it sorted after every due time (never expired), and
    reading it back answered 500."""
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 10)))
        response = api.reserve(client, store, "R-1", ("A", 1), expires_at="0999-01-02T00:00:00Z")
        assert response.status_code == 201, response.text
        expired = _wait_until_expired(client, store, ["R-1"])
        assert expired["R-1"]["expires_at"].startswith("0999-01-02T00:00:00")
        assert api.level(client, store, "A")["reserved"] == 0


def test_no_producer_can_take_the_key_of_an_expiry(database_url, serve):
    """An event under the ledger's own source `ledger/expiry`, with the id the ledger gives the
    expiry of a reservation at another store, was accepted; that expiry then failed on the key at
    every turn, and with it every reservation due in the same turn: none expired, ever."""
    server = serve(database_url, EXPIRY_ENV)
    store, other_store = unique("store"), unique("store")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 5)))
        expires_at = ev.now_rfc3339(1.0)
        for reservation_id in ("cart-1", "cart-2"):
            assert (
                api.reserve(client, store, reservation_id, ("A", 2), expires_at=expires_at).status_code == 201
            )
        squat = {
            **ev.receipt(other_store, ("B", 1)),
            "source": "ledger/expiry",
            "id": f"expire:{store}/cart-1",
        }
        refused = client.post("/v1/events", json=squat)
        assert [e["field"] for e in api.assert_problem(refused, 422)["errors"]] == ["source"]
        results = api.post_events(client, squat, ev.receipt(other_store, ("B", 1)))
        assert [r["outcome"] for r in results] == ["invalid", "accepted"], results
        _wait_until_expired(client, store, ["cart-1", "cart-2"])
        assert api.levels_tuple(api.level(client, store, "A")) == (5, 0, 5, 0)
    assert "reservation expiry failed" not in server.log_path.read_text()


def test_two_reservations_whose_ids_read_alike_across_stores_both_expire(database_url, serve):
    """Store ids and reservation ids may hold `:`: the expiry of `a:b` at store S and of `b` at store
    `S:a` had one key, `expire:S:a:b`, and the second, with every reservation due in its turn at any
    store, never expired (found by review)."""
    server = serve(database_url, EXPIRY_ENV)
    store = unique("store")
    other, bystander = f"{store}:a", unique("store")
    with server.client() as client:
        api.record(client, *(ev.receipt(s, ("A", 5)) for s in (store, other, bystander)))
        assert api.reserve(client, store, "a:b", ("A", 1), expires_at=ev.now_rfc3339(0.5)).status_code == 201
        _wait_until_expired(client, store, ["a:b"])
        expires_at = ev.now_rfc3339(0.5)
        assert api.reserve(client, other, "b", ("A", 1), expires_at=expires_at).status_code == 201
        assert api.reserve(client, bystander, "cart", ("A", 1), expires_at=expires_at).status_code == 201
        _wait_until_expired(client, other, ["b"])
        _wait_until_expired(client, bystander, ["cart"])
    assert "reservation expiry failed" not in server.log_path.read_text()


def test_an_expiry_that_cannot_be_recorded_holds_back_no_other(database_url, serve):
    """A database from before the `ledger/` sources were refused may hold a producer's event under
    the key of an expiry: that expiry fails on the key. A turn records every due expiry in one
    transaction, so it failed every other due with it, at any store, at every turn."""
    store, other_store = unique("store"), unique("store")
    server = serve(database_url, EXPIRY_ENV)
    db.execute(
        database_url,
        "INSERT INTO ledger_event_keys (source, event_id, position, outcome) VALUES (%s, %s, %s, %s)",
        ("ledger/expiry", f"expire:{store}/cart-1", 0, "accepted"),
    )
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 5)), ev.receipt(other_store, ("A", 5)))
        expires_at = ev.now_rfc3339(1.0)
        assert api.reserve(client, store, "cart-1", ("A", 2), expires_at=expires_at).status_code == 201
        for reservation_id in ("cart-2", "cart-3"):
            assert (
                api.reserve(client, other_store, reservation_id, ("A", 1), expires_at=expires_at).status_code
                == 201
            )
        _wait_until_expired(client, other_store, ["cart-2", "cart-3"])
        assert api.levels_tuple(api.level(client, other_store, "A")) == (5, 0, 5, 0)
        stuck = client.get(f"/v1/stores/{store}/reservations/cart-1").json()
        assert stuck["status"] == "active"  # its units stay held: nothing is recorded in its place
    log = server.log_path.read_text()
    assert f"the expiry of reservation cart-1 at store {store} cannot be recorded" in log
