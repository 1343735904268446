"""Business time (CONTRACT §7), the timeline (§8) and deep history pages, on both databases.

Events are sent with old `time`s, out of order, as an import of last year's history would be: the
levels at an event time are the sums over every entry that happened by then, however late it was
recorded, while `as_of` still reads the log as it stood at a recorded time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from support import access, api, db
from support import events as ev
from support.ids import unique

POINTS_MAX = 5


def _at(day: int) -> str:
    """Noon of a day of January 2025, written with a +03:00 offset (MoySklad's)."""
    return datetime(2025, 1, day, 12, tzinfo=UTC).astimezone(timezone(timedelta(hours=3))).isoformat()


def _event(event_type: str, store: str, day: int, *pairs: tuple[str, int], **data: Any) -> dict[str, Any]:
    return ev.envelope(event_type, store, {"lines": ev.lines(*pairs), **data}, time=_at(day))


def _levels(body: dict[str, Any]) -> tuple[int, int, int, int]:
    return api.levels_tuple(body)


def _timeline(client: httpx.Client, store: str, sku: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/stores/{store}/stock/{sku}/timeline", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["store_id"], body["sku"]) == (store, sku)
    points: list[dict[str, Any]] = body["points"]
    return points


def test_levels_at_an_event_time_sum_every_entry_that_happened_by_then_however_late_recorded(
    database_url: str, serve: Any
) -> None:
    server = serve(database_url)
    store, other = unique("shop"), unique("wh")
    # Recorded in this order; happened on the days given (an import of older history last).
    steps = [
        _event("stock.receipt", store, 10, ("A", 10)),
        _event("stock.sale", store, 12, ("A", 3)),
        _event("stock.reservation", store, 14, ("A", 2), reservation_id="R-1"),
        _event("stock.receipt", other, 11, ("A", 100)),
        _event("stock.receipt", store, 5, ("A", 7), reference="imported"),  # recorded late
        _event("stock.count", store, 20, ("A", 4)),  # on_hand := 4 (the entry records -10)
        _event("stock.adjustment", store, 2, ("A", -1), reason="damage"),  # the oldest, recorded last
    ]
    with server.client() as client:
        results = [api.record(client, step)[0] for step in steps]
        expected = {  # (on_hand, reserved) by event time, as recorded now
            1: (0, 0),
            2: (-1, 0),
            5: (6, 0),
            10: (16, 0),
            12: (13, 0),
            14: (13, 2),
            19: (13, 2),
            20: (3, 2),  # the count's delta (4 - 14 when it was recorded), summed in event-time order
        }
        for day, (on_hand, reserved) in expected.items():
            body = api.level(client, store, "A", occurred_as_of=_at(day))
            assert (body["on_hand"], body["reserved"], body["available"]) == (
                on_hand,
                reserved,
                on_hand - reserved,
            )
            assert body["store_id"] == store and body["sku"] == "A"
        # The position is the latest entry summed; nothing by then: 0 and no updated_at.
        assert api.level(client, store, "A", occurred_as_of=_at(12))["position"] == results[6]["position"]
        assert api.level(client, store, "A", occurred_as_of=_at(1))["position"] == 0
        assert api.level(client, store, "A", occurred_as_of=_at(1))["updated_at"] is None
        # Recorded time reads differently: before the import was recorded, day 5's receipt is not there.
        before_import = api.level(client, store, "A", position=results[3]["position"])
        assert _levels(before_import)[:2] == (7, 2)

        many = client.get(f"/v1/stores/{store}/stock", params={"sku": ["A", "B"], "occurred_as_of": _at(12)})
        assert many.status_code == 200, many.text
        assert [(i["sku"], i["on_hand"], i["reserved"]) for i in many.json()["items"]] == [
            ("A", 13, 0),
            ("B", 0, 0),
        ]

        across = client.get("/v1/stock/A", params={"occurred_as_of": _at(11)})
        assert across.status_code == 200, across.text
        stores = {s["store_id"]: s["on_hand"] for s in across.json()["stores"]}
        assert stores == {store: 16, other: 100}
        assert across.json()["total"]["on_hand"] == 116
        early = client.get("/v1/stock/A", params={"occurred_as_of": _at(10)}).json()
        assert {s["store_id"]: s["on_hand"] for s in early["stores"]} == {store: 16, other: 0}


def test_history_filters_on_event_time(database_url: str, serve: Any) -> None:
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        for day in (9, 3, 15, 7, 1):
            api.record(client, _event("stock.receipt", store, day, ("A", day)))
        window = api.history(client, store, occurred_from=_at(3), occurred_to=_at(9))
        assert [e["on_hand_delta"] for e in window] == [9, 3, 7]  # log order, not event-time order
        assert [e["on_hand_delta"] for e in api.history(client, store, occurred_from=_at(10))] == [15]
        assert [e["on_hand_delta"] for e in api.history(client, store, occurred_to=_at(1))] == [1]
        # The same instant in UTC, with a Z.
        utc = datetime(2025, 1, 7, 12, tzinfo=UTC).isoformat().replace("+00:00", "Z")
        assert [
            e["on_hand_delta"]
            for e in api.history(client, store, sku="A", occurred_from=utc, occurred_to=utc)
        ] == [7]


def test_deep_history_pages_hold_exactly_the_rows_after_their_cursor_in_order(
    database_url: str, serve: Any
) -> None:
    server = serve(database_url)
    store, other = unique("shop"), unique("wh")
    with server.client() as client:
        for i in range(30):
            pairs = [(f"S{(i + k) % 4}", 1 + k) for k in range(1 + i % 3)]
            api.record(client, ev.receipt(store, *pairs), ev.receipt(other, ("S0", 1)))
        naive = db.query(
            database_url,
            "SELECT position, line_no, sku FROM ledger_history WHERE store_id = %s",
            (store,),
        )
        naive.sort(key=lambda row: (row["position"], row["line_no"]))
        for sku in (None, "S1"):
            rows = [r for r in naive if sku is None or r["sku"] == sku]
            for start in range(0, len(rows), 7):
                params: dict[str, Any] = {"limit": 4}
                if sku:
                    params["sku"] = sku
                if start:
                    params["after"] = _cursor(rows[start - 1])
                page = client.get(f"/v1/stores/{store}/history", params=params)
                assert page.status_code == 200, page.text
                got = [(e["position"], e["sku"]) for e in page.json()["entries"]]
                assert got == [(r["position"], r["sku"]) for r in rows[start : start + 4]], (sku, start)
            # Following `next` from the start gives every row once, in order.
            walked = api.history(client, store, limit=3, **({"sku": sku} if sku else {}))
            assert [(e["position"], e["sku"]) for e in walked] == [(r["position"], r["sku"]) for r in rows]


def _cursor(row: dict[str, Any]) -> str:
    from ledger.api.history import encode_cursor

    return encode_cursor(row["position"], row["line_no"])


def test_a_timeline_is_thinned_evenly_keeping_its_first_and_last_points(
    database_url: str, serve: Any
) -> None:
    server = serve(database_url, env={"LEDGER_TIMELINE_POINTS_MAX": str(POINTS_MAX)})
    store = unique("shop")
    with server.client() as client:
        results = [api.record(client, _event("stock.receipt", store, 1 + i, ("A", 1)))[0] for i in range(13)]
        api.record(client, _event("stock.receipt", store, 1, ("B", 1)))  # another SKU: not a point
        everything = _timeline(client, store, "A")
        assert len(everything) == POINTS_MAX
        positions = [r["position"] for r in results]
        # 13 entries, 5 points: every third entry, the first and the last among them.
        assert [p["position"] for p in everything] == [positions[i] for i in (0, 3, 6, 9, 12)]
        assert [p["on_hand"] for p in everything] == [1, 4, 7, 10, 13]
        assert all(
            p["available"] == p["on_hand"] - p["reserved"] and p["type"] == "stock.receipt"
            for p in everything
        )
        thinned = client.get(f"/v1/stores/{store}/stock/A/timeline").json()
        assert thinned["thinned"] is True and thinned["axis"] == "recorded"

        # A window of three entries is not thinned; its last point is the as_of level at its end.
        entries = api.history(client, store, sku="A")
        window = _timeline(
            client, store, "A", **{"from": entries[4]["recorded_at"], "to": entries[6]["recorded_at"]}
        )
        assert [p["position"] for p in window] == positions[4:7]
        as_of_end = api.level(client, store, "A", as_of=entries[6]["recorded_at"])
        assert window[-1]["on_hand"] == as_of_end["on_hand"]

        # On the event-time axis: days 3 to 5, each point's levels are occurred_as_of's.
        occurred = _timeline(client, store, "A", axis="occurred", **{"from": _at(3), "to": _at(5)})
        assert [p["on_hand"] for p in occurred] == [3, 4, 5]
        for point in occurred:
            assert point["on_hand"] == api.level(client, store, "A", occurred_as_of=point["time"])["on_hand"]
        assert _timeline(client, store, "NEVER") == []


def test_a_timeline_on_the_event_time_axis_orders_by_event_time_and_sums_in_that_order(
    database_url: str, serve: Any
) -> None:
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        for day, qty in ((5, 10), (1, 3), (3, -2)):
            event_type = "stock.receipt" if qty > 0 else "stock.adjustment"
            data = {} if qty > 0 else {"reason": "damage"}
            api.record(client, _event(event_type, store, day, ("A", qty), **data))
        recorded = _timeline(client, store, "A")
        assert [p["on_hand"] for p in recorded] == [10, 13, 11]
        occurred = _timeline(client, store, "A", axis="occurred")
        assert [p["on_hand"] for p in occurred] == [3, 1, 11]
        assert [p["time"] for p in occurred] == [_at(1), _at(3), _at(5)]


def test_a_timeline_at_a_position_is_the_log_as_it_stood_then_on_both_axes(
    database_url: str, serve: Any
) -> None:
    """The console reads the timeline at its explanation's position, so that the plot ends where the
    figures above it stand. An entry recorded after that position is in neither axis, though on
    the business-time axis it is dated before the others."""
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        [first] = api.record(client, _event("stock.receipt", store, 5, ("A", 10)))
        [second] = api.record(client, _event("stock.receipt", store, 6, ("A", 1)))
        api.record(client, _event("stock.pos_sale", store, 1, ("A", 4)))  # recorded last, dated first
        at = second["position"]
        recorded = _timeline(client, store, "A", position=at)
        assert [(p["position"], p["on_hand"]) for p in recorded] == [(first["position"], 10), (at, 11)]
        assert recorded[-1]["on_hand"] == api.level(client, store, "A", position=at)["on_hand"]
        occurred = _timeline(client, store, "A", axis="occurred", position=at)
        assert [(p["position"], p["on_hand"]) for p in occurred] == [(first["position"], 10), (at, 11)]
        assert [p["on_hand"] for p in _timeline(client, store, "A", axis="occurred")] == [-4, 6, 7]
        assert _timeline(client, store, "A", position=0) == []


def test_wrong_business_time_and_timeline_parameters_are_refused_naming_them(
    database_url: str, serve: Any
) -> None:
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        api.record(client, _event("stock.receipt", store, 1, ("A", 1)))
        cases = [
            (f"/v1/stores/{store}/stock/A", {"occurred_as_of": "yesterday"}, "occurred_as_of"),
            (f"/v1/stores/{store}/stock/A", {"occurred_as_of": "2025-01-01T00:00:00"}, "occurred_as_of"),
            (f"/v1/stores/{store}/stock/A", {"occurred_as_of": _at(1), "as_of": _at(1)}, "occurred_as_of"),
            (f"/v1/stores/{store}/stock/A", {"occurred_as_of": _at(1), "position": 1}, "occurred_as_of"),
            (f"/v1/stores/{store}/stock", {"sku": "A", "occurred_as_of": "soon"}, "occurred_as_of"),
            ("/v1/stock/A", {"occurred_as_of": "soon"}, "occurred_as_of"),
            (f"/v1/stores/{store}/history", {"occurred_from": "soon"}, "occurred_from"),
            (f"/v1/stores/{store}/history", {"occurred_to": "2025-13-01T00:00:00Z"}, "occurred_to"),
            (f"/v1/stores/{store}/stock/A/timeline", {"from": "soon"}, "from"),
            (f"/v1/stores/{store}/stock/A/timeline", {"to": "soon"}, "to"),
            (f"/v1/stores/{store}/stock/A/timeline", {"from": _at(2), "to": _at(1)}, "from"),
            (f"/v1/stores/{store}/stock/A/timeline", {"axis": "sideways"}, "axis"),
            (f"/v1/stores/{store}/stock/A/timeline", {"position": "-1"}, "position"),
            (f"/v1/stores/{store}/stock/A/timeline", {"position": "1.0"}, "position"),
            (f"/v1/stores/{store}/stock/A/timeline", {"position": str(2**70)}, "position"),
        ]
        for path, params, field in cases:
            problem = api.assert_problem(client.get(path, params=params), 422)
            assert field in [error["field"] for error in problem["errors"]], (path, params, problem)


ENTRY_FIELDS = ("event_id", "source", "principal", "reference", "order_id", "reservation_id", "reason")


def test_each_timeline_point_names_its_entry_as_the_history_does_on_both_axes(
    database_url: str, serve: Any
) -> None:
    token = access.new_token(database_url, "till-7", "producer")  # before the start: no wait
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        client.headers.update(access.bearer(token))
        api.record(client, _event("stock.receipt", store, 3, ("A", 5), reference="delivery 7"))
        api.record(
            client, _event("stock.reservation", store, 1, ("A", 2), reservation_id="R-1", order_id="O-1")
        )
        [refused] = api.post_events(client, _event("stock.sale", store, 2, ("A", 9), order_id="O-2"))
        assert refused["outcome"] == "rejected"
        history = {entry["position"]: entry for entry in api.history(client, store, sku="A")}
        for axis in ("recorded", "occurred"):
            points = _timeline(client, store, "A", axis=axis)
            assert sorted(p["position"] for p in points) == sorted(history)
            for point in points:
                entry = history[point["position"]]
                for field in (*ENTRY_FIELDS, "type", "outcome", "time", "recorded_at"):
                    assert point[field] == entry.get(field), (axis, field, point, entry)
        assert {(p["source"], p["principal"]) for p in points} == {(ev.SOURCE, "till-7")}
        assert {p["reference"] for p in points} >= {"delivery 7"}
        assert {(p["order_id"], p["reason"]) for p in points} == {
            (None, None),
            ("O-1", None),
            ("O-2", "insufficient_stock"),
        }


def test_an_event_dated_before_the_year_1000_is_before_every_later_one(database_url: str, serve: Any) -> None:
    """A producer's year 0026 (a two-digit year written as four) is a time like any other: its
    stored text sorted after 2026's while it was written "26-...", so every read by time was wrong."""
    server = serve(database_url)
    store = unique("shop")
    early = ev.envelope("stock.receipt", store, {"lines": ev.lines(("A", 100))}, time="0026-01-01T10:00:00Z")
    late = ev.envelope("stock.pos_sale", store, {"lines": ev.lines(("A", 1))}, time="2026-01-01T10:00:00Z")
    with server.client() as client:
        api.record(client, early, late)
        assert api.level(client, store, "A", occurred_as_of="2099-01-01T00:00:00Z")["on_hand"] == 99
        assert api.level(client, store, "A", occurred_as_of="0027-01-01T00:00:00Z")["on_hand"] == 100
        assert api.level(client, store, "A", as_of="0999-01-01T00:00:00Z")["on_hand"] == 0
        assert [
            e["on_hand_delta"] for e in api.history(client, store, occurred_to="0999-01-01T00:00:00Z")
        ] == [100]
        assert [
            e["on_hand_delta"] for e in api.history(client, store, occurred_from="0999-01-01T00:00:00Z")
        ] == [-1]
        points = _timeline(client, store, "A", axis="occurred")
        assert [p["on_hand"] for p in points] == [100, 99]


def test_levels_at_an_event_time_carry_the_policy_figures_of_then(database_url: str, serve: Any) -> None:
    """CONTRACT §6: every stock answer carries safety_stock, sellable and channels. At an event time
    they are the policy in force then (a change's event time is when it was made) and the units
    its channels' reservations held then; they were left out (no policy, no channels)."""
    server = serve(database_url)
    store, other = unique("shop"), unique("shop")
    with server.client() as client:
        api.record(
            client, _event("stock.receipt", store, 1, ("A", 10)), _event("stock.receipt", other, 1, ("A", 4))
        )
        api.put_policy(client, store, "*", {"safety_stock": 1, "channels": {}})
        api.put_policy(client, store, "A", {"safety_stock": 2, "channels": {"online": {"quota_units": 3}}})
        assert api.reserve(client, store, "R-1", ("A", 1), channel="online").status_code == 201
        assert api.reserve(client, store, "R-2", ("A", 2), channel="online").status_code == 201
        assert client.post(f"/v1/stores/{store}/reservations/R-2/release", json={}).status_code == 200
        figures = ("on_hand", "reserved", "available", "safety_stock", "sellable", "channels")

        now = api.level(client, store, "A")
        later = api.level(client, store, "A", occurred_as_of="2999-01-01T00:00:00Z")
        before = api.level(client, store, "A", occurred_as_of=_at(2))

        assert now["channels"] == {"online": {"quota": 3, "reserved": 1, "sellable": 2}}
        assert {k: later[k] for k in figures} == {k: now[k] for k in figures}
        assert {k: before[k] for k in figures} == {
            "on_hand": 10,
            "reserved": 0,
            "available": 10,
            "safety_stock": 0,
            "sellable": 10,
            "channels": {},
        }
        totals_now = client.get("/v1/stock/A").json()
        totals_later = client.get("/v1/stock/A", params={"occurred_as_of": "2999-01-01T00:00:00Z"}).json()
        assert [
            {k: s[k] for k in figures} for s in totals_later["stores"] if s["store_id"] in (store, other)
        ] == [{k: s[k] for k in figures} for s in totals_now["stores"] if s["store_id"] in (store, other)]
