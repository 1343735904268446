"""A body that gives a key twice in one object (`{"qty": 1, "qty": 500}`) is ambiguous: JSON parsers
keep one value or the other, and an event is recorded for good. Every route that reads a JSON body
refuses it, 422 problem+json naming the key, the fast path's routes as the others; in a batch of
events, that element alone is answered `invalid`."""

from __future__ import annotations

import httpx
import orjson
from support import api
from support import events as ev
from support.ids import unique

JSON = {"content-type": "application/json"}


def _twice(body: object, once: bytes, twice: bytes) -> bytes:
    text = orjson.dumps(body)
    assert once in text, text
    return text.replace(once, twice, 1)


def _refused(answer: httpx.Response, field: str) -> None:
    problem = api.assert_problem(answer, 422)
    assert [error["field"] for error in problem["errors"]] == [field], problem
    assert "is given twice in one object" in problem["detail"], problem


def test_every_body_that_gives_a_key_twice_is_refused_naming_it_and_changes_nothing(
    client: httpx.Client,
) -> None:
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 5)))
    one = {"reservation_id": "R-1", "lines": [{"sku": "A", "qty": 1}]}
    qty_twice = (b'"qty":1', b'"qty":1,"qty":5')
    cases = [
        # The fast path's routes (ledger/api/fastpath.py).
        (f"/v1/stores/{store}/reservations", one, qty_twice, "lines[0].qty"),
        ("/v1/sourcing", {"lines": [{"sku": "A", "qty": 1}], "stores": [store]}, qty_twice, "lines[0].qty"),
        # FastAPI's.
        (
            "/v1/reservations",
            {"reservation_id": "R-2", "lines": [{"store": store, "sku": "A", "qty": 1}]},
            qty_twice,
            "lines[0].qty",
        ),
        ("/v1/events", ev.sale(store, ("A", 1)), qty_twice, "data.lines[0].qty"),
    ]
    for path, body, (once, twice), field in cases:
        _refused(client.post(path, content=_twice(body, once, twice), headers=JSON), field)
    policy = _twice({"safety_stock": 1}, b'"safety_stock":1', b'"safety_stock":1,"safety_stock":4')
    _refused(client.put(f"/v1/stores/{store}/policies/A", content=policy, headers=JSON), "safety_stock")
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 0, 5, 0)
    assert api.level(client, store, "A")["safety_stock"] == 0
    assert api.reserve(client, store, "R-3", ("A", 2)).status_code == 201
    release = _twice({"lines": [{"sku": "A", "qty": 1}]}, b'"lines"', b'"lines":[],"lines"')
    _refused(
        client.post(f"/v1/stores/{store}/reservations/R-3/release", content=release, headers=JSON), "lines"
    )
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 2, 3, 0)


def test_in_a_batch_the_element_that_gives_a_key_twice_alone_is_invalid(client: httpx.Client) -> None:
    store = unique("store")
    batch = [ev.receipt(store, ("A", 5)), ev.receipt(store, ("A", 1))]
    text = orjson.dumps(batch)
    second = text.rindex(b'"qty":1')
    text = text[:second] + b'"qty":1,"qty":500' + text[second + len(b'"qty":1') :]
    answer = client.post("/v1/events", content=text, headers=JSON)
    assert answer.status_code == 200, answer.text
    first, refused = answer.json()["results"]
    assert first["outcome"] == "accepted", first
    assert refused["outcome"] == "invalid" and refused["id"] == batch[1]["id"], refused
    assert [error["field"] for error in refused["errors"]] == ["data.lines[0].qty"], refused
    assert api.levels_tuple(api.level(client, store, "A")) == (5, 0, 5, 0)
