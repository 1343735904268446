"""The availability feed's rounds (CONTRACT §9), read from the committed history without a broker:
one record per changed store and SKU, with the newest figures, equal to what the REST API answers
at that record's position; nothing for refused events; a default policy reaches every SKU."""

from __future__ import annotations

from typing import Any

from support import api
from support import events as ev
from support.ids import unique

from ledger.feed.record import LevelRecord, decode_record, encode_record
from ledger.feed.rounds import default_change_page, read_round
from ledger.storage.opening import open_recorder

FIGURES = ("on_hand", "reserved", "available", "incoming", "safety_stock", "sellable", "channels")


def _round(database_url: str, after_position: int, rows_max: int = 5000) -> Any:
    recorder = open_recorder(database_url, 2, 30)
    try:
        with recorder.read_transaction() as tx:
            return read_round(tx, after_position, rows_max)
    finally:
        recorder.close()


def _body(record: LevelRecord) -> dict[str, Any]:
    import orjson

    body: dict[str, Any] = orjson.loads(encode_record(record))
    assert decode_record(encode_record(record)) == record
    return body


def _figures(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in FIGURES}


def test_a_round_holds_each_changed_store_and_sku_once_with_its_newest_figures(database_url, serve):
    server = serve(database_url)
    store, other = unique("shop"), unique("wh")
    with server.client() as client:
        api.put_policy(client, store, "A", {"safety_stock": 2, "channels": {"online": {"quota_pct": 50}}})
        api.record(
            client,
            ev.receipt(store, ("A", 10), ("B", 4)),
            ev.reservation(store, "R-1", ("A", 3), channel="online"),
            ev.sale(store, ("B", 1)),
            ev.receipt(other, ("A", 7)),
            ev.transfer(other, store, "T-1", ("A", 5)),
            ev.pos_sale(store, ("A", 1)),
        )
        last = api.record(client, ev.shipment(store, ("A", 1), reservation_id="R-1"))[0]["position"]
        found = _round(database_url, 0)
        assert found.end_position == last
        keys = [(r.store_id, r.sku) for r in found.records]
        assert sorted(keys) == sorted({(store, "A"), (store, "B"), (other, "A")})  # once each
        positions = [r.position for r in found.records]
        assert positions == sorted(positions)
        for record in found.records:
            body = _body(record)
            now = api.level(client, record.store_id, record.sku)
            assert _figures(body) == _figures(now), record
            # Each record is the level as of its own position, which the REST API also answers.
            then = api.level(client, record.store_id, record.sku, position=record.position)
            assert _figures(body) == _figures(then), record
        a_here = next(r for r in found.records if (r.store_id, r.sku) == (store, "A"))
        assert a_here.position == last and a_here.channels["online"].reserved_units == 2


def test_refused_events_and_no_ops_publish_nothing(database_url, serve):
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        start = api.record(client, ev.receipt(store, ("A", 2)))[0]["position"]
        refused = api.post_events(
            client,
            ev.sale(store, ("A", 5)),  # insufficient stock
            ev.reservation(store, "R-9", ("A", 3)),  # insufficient stock
            ev.release(store, "R-unknown"),  # unknown reservation
        )
        assert [r["outcome"] for r in refused] == ["rejected"] * 3
        assert _round(database_url, start) is not None  # there are rows after it...
        assert _round(database_url, start).records == []  # ...and none changed a figure


def _published(database_url: str, after_position: int, rows_max: int, skus_max: int) -> list[LevelRecord]:
    """Every record after a position, in the order the publisher sends them: each round's, then the
    pages of its default policy change."""
    recorder = open_recorder(database_url, 2, 30)
    published: list[LevelRecord] = []
    try:
        while True:
            with recorder.read_transaction() as tx:
                found = read_round(tx, after_position, rows_max)
            if found is None:
                return published
            published += found.records
            after_sku = ""
            while found.default_change is not None:
                with recorder.read_transaction() as tx:
                    page = default_change_page(tx, found.default_change, after_sku, skus_max)
                published += page.records
                if page.last_sku is None:
                    break
                after_sku = page.last_sku
            after_position = found.end_position
    finally:
        recorder.close()


def test_a_default_policy_reaches_every_sku_of_the_store_without_its_own(database_url, serve):
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 10), ("B", 10), ("C", 10), ("D", 10), ("E", 10)))
        api.put_policy(client, store, "C", {"safety_stock": 1, "channels": {}})
        before = api.record(client, ev.sale(store, ("B", 2), ("D", 1)))[0]["position"] - 1
        api.put_policy(client, store, "*", {"safety_stock": 3, "channels": {"online": {"quota_units": 4}}})
        after_default = api.level(client, store, "A")["position"]
        api.record(client, ev.sale(store, ("B", 1)))  # B changes again after the default
        # One round for everything, one SKU a page: the default's records are paged through the
        # store's levels, and the round ends at the default.
        published = _published(database_url, before, rows_max=100, skus_max=1)
        seen = [(r.sku, r.position) for r in published]
        assert seen == [
            ("A", after_default),
            ("B", after_default),
            ("D", after_default),
            ("E", after_default),
            ("B", after_default + 1),
        ]  # C keeps its own policy; the sale before the default gives way to it
        last = {r.sku: r for r in published}
        assert last["A"].sellable_units == 7 and last["D"].sellable_units == 6
        for record in published:
            then = api.level(client, store, record.sku, position=record.position)
            assert _figures(_body(record)) == _figures(then), record
        for record in last.values():
            assert _figures(_body(record)) == _figures(api.level(client, store, record.sku))


def test_a_record_of_an_older_position_takes_the_policy_of_then(database_url, serve):
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 10)))
        api.put_policy(client, store, "A", {"safety_stock": 1, "channels": {}})
        start = api.record(client, ev.receipt(store, ("B", 1)))[0]["position"]
        moved = api.record(client, ev.receipt(store, ("A", 1)))[0]["position"]
        api.put_policy(client, store, "A", {"safety_stock": 5, "channels": {}})  # after the round
        found = _round(database_url, start, rows_max=1)  # one event: the receipt of A
        assert found.end_position == moved
        [record] = found.records
        assert (record.safety_stock_units, record.sellable_units) == (1, 10)
        then = api.level(client, store, "A", position=moved)
        assert _figures(_body(record)) == _figures(then)


def test_a_sku_that_only_ever_had_a_policy_follows_a_later_default(database_url, serve):
    """A policy set on a SKU that never moved publishes its record (zero levels, the policy's
    figures); cleared, the next. A default set after that left it out (its record kept the
    figures of before), whether the clearing was published in an earlier round or in the
    default's own: a consumer keeping the last record held other figures than the API answers."""
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        start = api.record(client, ev.receipt(store, ("X", 5)))[0]["position"]
        api.put_policy(client, store, "Y", {"safety_stock": 5, "channels": {}})
        api.put_policy(client, store, "Z", {"safety_stock": 4, "channels": {}})
        cleared_y = api.put_policy(client, store, "Y", {})
        earlier = _published(database_url, start, rows_max=100, skus_max=1)  # Y cleared, in a round
        assert {r.sku: r.safety_stock_units for r in earlier} == {"Y": 0, "Z": 4}
        after = max(r.position for r in earlier)
        api.put_policy(client, store, "Z", {})  # cleared in the default's own round
        api.put_policy(client, store, "*", {"safety_stock": 1, "channels": {}})

        published = earlier + _published(database_url, after, rows_max=100, skus_max=1)

        last = {r.sku: r for r in published}
        assert sorted(last) == ["X", "Y", "Z"]
        for sku, record in last.items():
            assert _figures(_body(record)) == _figures(api.level(client, store, sku)), (sku, cleared_y)
        assert (last["Y"].safety_stock_units, last["Y"].sellable_units) == (1, -1)
