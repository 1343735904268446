"""The NUL character (U+0000), which PostgreSQL's text cannot hold, in what a caller sends: on both
databases alike, a 422 naming the field, and the valid events of a batch recorded. On PostgreSQL it
failed the writer's whole batch (a batch's valid events lost with it, after three retries), and a
history filter holding it answered 500; SQLite took it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support.events import receipt, reservation
from support.ids import unique
from support.server import LedgerServer

NUL = "\x00"


@pytest.fixture(scope="module")
def client(module_database_url: str, module_serve) -> Iterator[httpx.Client]:
    server: LedgerServer = module_serve(module_database_url)
    with server.client() as http:
        yield http


@pytest.mark.parametrize(
    ("field", "place"),
    [("id", lambda e: e.update(id=f"a{NUL}b")), ("source", lambda e: e.update(source=f"pos{NUL}")),
     ("data.reference", lambda e: e["data"].update(reference=f"doc{NUL}1"))],
    ids=["id", "source", "reference"],
)  # fmt: skip
def test_a_nul_in_an_event_is_invalid_and_the_rest_of_the_batch_is_recorded(
    client: httpx.Client, field: str, place
) -> None:
    store = unique("nul")
    bad, good = receipt(store, ("SKU-1", 1)), receipt(store, ("SKU-1", 2))
    place(bad)
    answer = client.post("/v1/events", json=[bad, good])
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["results"]
    assert first["outcome"] == "invalid"
    assert first["errors"] == [{"field": field, "message": "must not contain the NUL character (U+0000)"}]
    assert second["outcome"] == "accepted"
    level = client.get(f"/v1/stores/{store}/stock/SKU-1").json()
    assert level["on_hand"] == 2

    alone = client.post("/v1/events", json=bad)
    assert alone.status_code == 422 and alone.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in alone.json()["errors"]] == [field]


def test_a_nul_in_a_reservations_order_is_refused_naming_it(client: httpx.Client) -> None:
    store = unique("nul-r")
    assert client.post("/v1/events", json=receipt(store, ("SKU-1", 5))).status_code == 200
    body = {"reservation_id": "R-1", "order_id": f"1001{NUL}", "lines": [{"sku": "SKU-1", "qty": 1}]}
    answer = client.post(f"/v1/stores/{store}/reservations", json=body)
    assert answer.status_code == 422, answer.text
    assert "order_id" in [error["field"].rsplit(".", 1)[-1] for error in answer.json()["errors"]]
    event = reservation(store, "R-2", ("SKU-1", 1), order_id=f"o{NUL}")
    assert client.post("/v1/events", json=event).json()["errors"][0]["field"] == "data.order_id"


@pytest.mark.parametrize("name", ["sku", "order_id", "reservation_id"])
def test_a_nul_in_a_history_filter_is_refused_naming_it(client: httpx.Client, name: str) -> None:
    answer = client.get(f"/v1/stores/{unique('nul-h')}/history", params={name: f"A{NUL}"})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in answer.json()["errors"]] == [name]
