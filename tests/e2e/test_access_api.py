"""Access control over HTTP (CONTRACT §5): each role and each scope, against a `ledger serve` with
tokens. Every refusal is checked to have recorded nothing, by looking with an admin token."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from support import api
from support import events as ev
from support.access import bearer, new_token, wait_until_taken
from support.ids import unique
from support.raw_http import raw_answer
from support.server import LedgerServer

_names = itertools.count(1)


@dataclass
class Closed:
    """A server with access control on, and a client holding its admin token."""

    server: LedgerServer
    database_url: str
    admin: httpx.Client
    names: dict[str, str] = field(default_factory=dict)  # token -> its name

    def token(self, role: str, **scopes: Any) -> str:
        """A new token, once the server takes it."""
        name = f"{role}-{next(_names)}"
        token = new_token(self.database_url, name, role, **scopes)
        self.names[token] = name
        wait_until_taken(self.server.url, token)
        return token

    def client(self, token: str | None) -> httpx.Client:
        client = self.server.client()
        if token is not None:
            client.headers.update(bearer(token))
        return client

    def history(self, store: str) -> list[dict[str, Any]]:
        return api.history(self.admin, store)

    def head(self) -> int:
        return int(self.admin.get("/readyz").json()["position"])


@pytest.fixture(scope="module")
def closed(module_serve, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Closed]:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('closed') / 'ledger.db'}"
    admin_token = new_token(database_url, "admin", "admin")
    server = module_serve(database_url, {"LEDGER_EXPIRY_INTERVAL_MS": "100"})
    with server.client() as admin:
        admin.headers.update(bearer(admin_token))
        yield Closed(server, database_url, admin)


def _stocked(closed: Closed, store: str, *pairs: tuple[str, int]) -> None:
    api.record(closed.admin, ev.receipt(store, *pairs))


# -- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/stores/s/stock/A"),
        ("GET", "/v1/stores/s/stock/A/explain"),
        ("GET", "/v1/stores/s/stock?sku=A"),
        ("GET", "/v1/stock/A"),
        ("POST", "/v1/events"),
        ("POST", "/v1/stores/s/reservations"),
        ("GET", "/v1/stores/s/reservations/r"),
        ("POST", "/v1/stores/s/reservations/r/release"),
        ("GET", "/v1/stores/s/history"),
        ("GET", "/v1/stores/s/stock/A/timeline"),
        ("GET", "/redoc"),
        ("GET", "/v1/no-such-route"),
        ("POST", "/v1/no-such-route"),
        ("DELETE", "/v1/events"),
    ],
)
def test_without_a_valid_token_every_route_and_unknown_ones_answer_401(
    closed: Closed, method: str, path: str
) -> None:
    head = closed.head()
    for headers in ({}, bearer("sl_live_" + "x" * 43), {"authorization": "Basic YWRtaW46YWRtaW4="}):
        with closed.client(None) as client:
            response = client.request(method, path, headers=headers, json={})
        problem = api.assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "x" * 43 not in str(problem)
    assert closed.head() == head


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/openapi.json", "/docs", "/metrics", "/docs/assets/swagger-ui-bundle.js"]
)
def test_the_open_routes_need_no_token(closed: Closed, path: str) -> None:
    with closed.client(None) as client:
        assert client.get(path).status_code == 200


def test_head_is_gated_as_get_is(closed: Closed) -> None:
    """HEAD goes through the same gate as the GET it stands for: refused without a token, answered
    for a reader, open where GET is open."""
    store = unique("store")
    _stocked(closed, store, ("A", 5))
    path = f"/v1/stores/{store}/stock/A"
    with closed.client(None) as anonymous:
        refused = anonymous.head(path)
        assert refused.status_code == 401 and refused.content == b""
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.head("/healthz").status_code == 200
    with closed.client(closed.token("reader")) as reader:
        answered = reader.head(path)
        assert answered.status_code == 200 and answered.content == b""
        assert answered.headers["content-length"] == reader.get(path).headers["content-length"]


def test_an_expired_token_answers_401(closed: Closed) -> None:
    token = new_token(closed.database_url, f"brief-{next(_names)}", "reader", expires_in_s=1.5)
    wait_until_taken(closed.server.url, token)
    deadline = time.monotonic() + 10.0  # its expiry is 1.5 s away
    with closed.client(token) as client:
        while client.get("/v1/stores/s/stock/A").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        api.assert_problem(client.get("/v1/stores/s/stock/A"), 401, "unauthorized")


# -- roles -----------------------------------------------------------------------------------------


def test_a_reader_reads_everything_and_records_nothing(closed: Closed) -> None:
    store = unique("store")
    _stocked(closed, store, ("A", 5))
    with closed.client(closed.token("reader")) as reader:
        assert api.level(reader, store, "A")["on_hand"] == 5
        assert reader.get(f"/v1/stores/{store}/stock", params={"sku": "A"}).status_code == 200
        assert reader.get("/v1/stock/A").status_code == 200
        assert reader.get(f"/v1/stores/{store}/history").status_code == 200
        assert reader.get(f"/v1/stores/{store}/stock/A/timeline").status_code == 200
        assert reader.get(f"/v1/stores/{store}/stock/A/explain").json()["on_hand"] == 5
        assert reader.get(f"/v1/stores/{store}/reservations/R-1").status_code == 404
        head = closed.head()
        refusals = [
            reader.post("/v1/events", json=ev.count(store, ("A", 0))),
            api.reserve(reader, store, "R-1", ("A", 1)),
            reader.post(f"/v1/stores/{store}/reservations/R-1/release", json={}),
        ]
    for refused in refusals:
        problem = api.assert_problem(refused, 403, "forbidden")
        assert problem["role"] == "producer"
    assert closed.head() == head
    assert api.level(closed.admin, store, "A")["on_hand"] == 5


@pytest.mark.parametrize("role", ["producer", "operator", "admin"])
def test_a_producer_and_the_roles_above_it_record_events_and_reservations(closed: Closed, role: str) -> None:
    store = unique("store")
    token = closed.token(role)
    with closed.client(token) as client:
        api.record(client, ev.receipt(store, ("A", 3)))
        assert api.reserve(client, store, "R-1", ("A", 2)).status_code == 201
        assert client.post(f"/v1/stores/{store}/reservations/R-1/release", json={}).status_code == 200
        assert api.level(client, store, "A")["available"] == 3
    # Who did it: the token's name on every entry.
    assert [entry["principal"] for entry in closed.history(store)] == [closed.names[token]] * 3


# -- store scopes ----------------------------------------------------------------------------------


def test_a_store_scoped_producer_is_refused_other_stores_whole_and_nothing_is_recorded(
    closed: Closed,
) -> None:
    mine, other = unique("mine"), unique("other")
    _stocked(closed, mine, ("A", 10))
    _stocked(closed, other, ("A", 10))
    token = closed.token("producer", stores=(mine,))
    head = closed.head()
    with closed.client(token) as till:
        # A batch with one event at another store: refused whole, the in-scope event included.
        batch = till.post(
            "/v1/events",
            json=[ev.pos_sale(mine, ("A", 1)), ev.count(other, ("A", 0))],
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert api.assert_problem(batch, 403, "forbidden")["store"] == other
        # ... even when that element is invalid otherwise.
        invalid = till.post("/v1/events", json=[ev.pos_sale(mine, ("A", 1)), {"subject": other}])
        assert api.assert_problem(invalid, 403, "forbidden")["store"] == other
        refusals = [
            till.post("/v1/events", json=ev.count(other, ("A", 0))),
            api.reserve(till, other, "R-1", ("A", 1)),  # the fast path
            till.post(f"/v1/stores/{other}/reservations/R-1/release", json={}),
            till.get(f"/v1/stores/{other}/stock/A"),  # the fast path: the level is in memory
            till.get(f"/v1/stores/{other}/stock/A", params={"position": 1}),
            till.get(f"/v1/stores/{other}/stock", params={"sku": "A"}),
            till.get(f"/v1/stores/{other}/stock/A/explain"),
            till.get(f"/v1/stores/{other}/history"),
            till.get(f"/v1/stores/{other}/stock/A/timeline"),
            till.get(f"/v1/stores/{other}/stock/A", params={"occurred_as_of": "2025-01-01T00:00:00Z"}),
            till.get(f"/v1/stores/{other}/reservations/R-1"),
        ]
        for refused in refusals:
            assert api.assert_problem(refused, 403, "forbidden")["store"] == other
        assert closed.head() == head
        assert [e["type"] for e in closed.history(other)] == ["stock.receipt"]
        assert [e["type"] for e in closed.history(mine)] == ["stock.receipt"]

        # Its own store, all of it.
        api.record(till, ev.pos_sale(mine, ("A", 1)))
        assert api.reserve(till, mine, "R-1", ("A", 2)).status_code == 201
        assert api.level(till, mine, "A")["available"] == 7
        assert till.get(f"/v1/stores/{mine}/stock/A/explain").json()["reserved_by"][0]["remaining"] == 2


def test_a_transfer_needs_only_its_sending_store_in_scope(closed: Closed) -> None:
    shop, warehouse = unique("shop"), unique("wh")
    _stocked(closed, shop, ("A", 5))
    _stocked(closed, warehouse, ("A", 5))
    with closed.client(closed.token("producer", stores=(shop,))) as shop_client:
        api.record(shop_client, ev.transfer(shop, warehouse, unique("T"), ("A", 2)))
        incoming = shop_client.post("/v1/events", json=ev.transfer(warehouse, shop, unique("T"), ("A", 2)))
        assert api.assert_problem(incoming, 403, "forbidden")["store"] == warehouse
    assert api.level(closed.admin, warehouse, "A")["incoming"] == 2
    assert api.level(closed.admin, warehouse, "A")["on_hand"] == 5


def test_a_store_scoped_reader_sees_a_sku_only_at_its_stores_and_totals_over_them(closed: Closed) -> None:
    sku = unique("SKU")
    first, second, hidden = unique("a"), unique("b"), unique("c")
    for store, qty in ((first, 1), (second, 2), (hidden, 40)):
        _stocked(closed, store, (sku, qty))
    with closed.client(closed.token("reader", stores=(first, second))) as reader:
        body = reader.get(f"/v1/stock/{sku}").json()
    assert sorted(level["store_id"] for level in body["stores"]) == sorted([first, second])
    assert body["total"] == {
        "on_hand": 3,
        "reserved": 0,
        "available": 3,
        "incoming": 0,
        "safety_stock": 0,
        "sellable": 3,
        "channels": {},
    }
    everything = closed.admin.get(f"/v1/stock/{sku}").json()
    assert everything["total"]["on_hand"] == 43
    # As of a business time, `position` is the latest entry summed: of its stores, so that it does
    # not tell the reader when another store last moved the SKU.
    later = {"occurred_as_of": "2999-01-01T00:00:00Z"}
    with closed.client(closed.token("reader", stores=(first, second))) as reader:
        scoped = reader.get(f"/v1/stock/{sku}", params=later).json()
    positions = {level["store_id"]: level["position"] for level in scoped["stores"]}
    assert scoped["position"] == max(positions.values())
    assert closed.admin.get(f"/v1/stock/{sku}", params=later).json()["position"] > scoped["position"]


def test_a_store_scoped_token_acts_on_its_stores_reservation_whatever_other_stores_hold_its_id(
    closed: Closed,
) -> None:
    """Reservation ids are unique per store only (CONTRACT §1): another store's reservation under the
    same id, or more such stores than a reservation across stores may span, is not the token's."""
    rid, base = unique("R"), unique("x")
    mine, others = f"{base}-z", [f"{base}-a{i:02d}" for i in range(21)]  # LEDGER_RESERVATION_STORES_MAX 20
    api.record(closed.admin, *(ev.receipt(store, ("A", 5)) for store in [mine, *others]))
    api.record(closed.admin, *(ev.reservation(store, rid, ("A", 3)) for store in others))
    with closed.client(closed.token("producer", stores=(mine,))) as till:
        assert api.reserve(till, mine, rid, ("A", 2)).status_code == 201
        read = till.get(f"/v1/reservations/{rid}")
        assert read.status_code == 200, read.text
        assert [part["store_id"] for part in read.json()["stores"]] == [mine]
        released = till.post(f"/v1/reservations/{rid}/release", json={})
        assert released.status_code == 200, released.text
        assert [(part["store_id"], part["status"]) for part in released.json()["stores"]] == [
            (mine, "released")
        ]
    assert api.level(closed.admin, mine, "A")["reserved"] == 0
    assert [api.level(closed.admin, store, "A")["reserved"] for store in others] == [3] * len(others)


def test_a_store_scoped_token_is_refused_another_stores_reservation_naming_that_store(
    closed: Closed,
) -> None:
    """A read or release of a reservation held only at another store: 403 naming the store that is
    missing (CONTRACT §5), and nothing recorded."""
    mine, other = unique("mine"), unique("other")
    rid = unique("R")
    _stocked(closed, other, ("A", 5))
    assert api.reserve(closed.admin, other, rid, ("A", 1)).status_code == 201
    head = closed.head()
    with closed.client(closed.token("producer", stores=(mine,))) as till:
        for method, suffix, body in (("GET", "", None), ("POST", "/release", {})):
            theirs = till.request(method, f"/v1/reservations/{rid}{suffix}", json=body)
            assert api.assert_problem(theirs, 403, "forbidden")["store"] == other
    assert closed.head() == head
    assert api.level(closed.admin, other, "A")["reserved"] == 1


def test_a_reservation_across_stores_is_refused_whole_to_a_token_without_every_store(
    closed: Closed,
) -> None:
    """Its parts were placed together: a token scoped to one of them may neither read nor release
    the whole (CONTRACT §5, refused whole, the 403 naming the store that is missing)."""
    mine, other = unique("mine"), unique("other")
    rid = unique("R")
    _stocked(closed, mine, ("A", 5))
    _stocked(closed, other, ("A", 5))
    lines = [{"store": mine, "sku": "A", "qty": 1}, {"store": other, "sku": "A", "qty": 1}]
    assert (
        closed.admin.post("/v1/reservations", json={"reservation_id": rid, "lines": lines}).status_code == 201
    )
    head = closed.head()
    with closed.client(closed.token("producer", stores=(mine,))) as till:
        for refused in (
            till.get(f"/v1/reservations/{rid}"),
            till.post(f"/v1/reservations/{rid}/release", json={}),
        ):
            assert api.assert_problem(refused, 403, "forbidden")["store"] == other
        # Its own store's part, at its store's address.
        assert till.get(f"/v1/stores/{mine}/reservations/{rid}").status_code == 200
    assert closed.head() == head
    assert api.level(closed.admin, mine, "A")["reserved"] == 1


# -- source scopes ---------------------------------------------------------------------------------


def test_a_source_scoped_producer_may_send_only_its_sources(closed: Closed) -> None:
    store = unique("store")
    prefix = f"pos/{store}/"
    token = closed.token("producer", sources=(prefix,))
    event_id = unique("pos")
    # A third party cannot take a till's (source, id) first: its event is refused.
    squatter = ev.envelope(
        "stock.receipt", store, {"lines": ev.lines(("A", 1))}, event_id=event_id, source=f"{prefix}till-1"
    )
    with closed.client(closed.token("producer", sources=("wms/",))) as other:
        assert (
            api.assert_problem(other.post("/v1/events", json=squatter), 403)["source"] == squatter["source"]
        )
    with closed.client(token) as till:
        refused = till.post(
            "/v1/events", json=ev.envelope("stock.receipt", store, {"lines": ev.lines(("A", 1))})
        )
        assert api.assert_problem(refused, 403, "forbidden")["source"] == ev.SOURCE
        [result] = api.record(till, squatter)
    assert result["outcome"] == "accepted"
    assert [entry["source"] for entry in closed.history(store)] == [f"{prefix}till-1"]


def test_a_source_scoped_token_places_no_reservation_unless_a_prefix_covers_the_routes_source(
    closed: Closed,
) -> None:
    """The reservation routes record under the ledger's own source, ledger/http: a till's token,
    scoped to its sources, cannot place or release the online store's reservations at its store."""
    store = unique("store")
    _stocked(closed, store, ("A", 5))
    body = {"reservation_id": unique("R"), "lines": [{"sku": "A", "qty": 1}]}
    path = f"/v1/stores/{store}/reservations"
    with closed.client(closed.token("producer", stores=(store,), sources=(f"pos/{store}/",))) as till:
        refused = till.post(path, json=body)
        assert api.assert_problem(refused, 403, "forbidden")["source"] == "ledger/http"
    assert api.level(closed.admin, store, "A")["reserved"] == 0
    with closed.client(closed.token("producer", stores=(store,), sources=("ledger/http",))) as shop:
        assert shop.post(path, json=body).status_code == 201
    assert api.level(closed.admin, store, "A")["reserved"] == 1


def test_a_source_scoped_token_reserves_nothing_by_sourcing_with_or_without_named_stores(
    closed: Closed,
) -> None:
    """Sourcing with `reserve` records under ledger/sourcing, whether the stores are named or found."""
    store, sku = unique("store"), unique("SKU")
    _stocked(closed, store, (sku, 5))
    order = {"lines": [{"sku": sku, "qty": 1}], "reserve": {"reservation_id": unique("R")}}
    with closed.client(closed.token("producer", stores=(store,), sources=(f"pos/{store}/",))) as till:
        for body in (order, {**order, "stores": [store]}):
            refused = till.post("/v1/sourcing", json=body)
            assert api.assert_problem(refused, 403, "forbidden")["source"] == "ledger/sourcing", body
        assert till.post("/v1/sourcing", json={"lines": order["lines"]}).status_code == 200  # asking only
    assert api.level(closed.admin, store, sku)["reserved"] == 0


def test_a_source_scoped_operator_sets_no_policy_unless_a_prefix_covers_the_routes_source(
    closed: Closed,
) -> None:
    """A policy change is recorded under the ledger's own source, ledger/policies, as a reservation
    under ledger/http: an operator's token scoped to other sources changes no store's policy (a
    policy limits what every channel may sell there), and reading one needs no source."""
    store, sku = unique("store"), unique("SKU")
    path = f"/v1/stores/{store}/policies/{sku}"
    with closed.client(closed.token("operator", stores=(store,), sources=(f"pos/{store}/",))) as scoped:
        for key in (sku, "*"):
            refused = scoped.put(f"/v1/stores/{store}/policies/{key}", json={"safety_stock": 3})
            assert api.assert_problem(refused, 403, "forbidden")["source"] == "ledger/policies", key
        assert scoped.get(path).json()["safety_stock"] == 0
    assert [entry["type"] for entry in closed.history(store)] == []
    with closed.client(closed.token("operator", stores=(store,), sources=("ledger/policies",))) as covered:
        assert covered.put(path, json={"safety_stock": 3}).status_code == 200
    assert closed.admin.get(path).json()["safety_stock"] == 3


# -- rate limits -----------------------------------------------------------------------------------


def test_a_token_over_its_rate_answers_429_with_retry_after_and_holds_no_other_back(closed: Closed) -> None:
    noisy = closed.token("reader", rate_per_s=2)
    quiet = closed.token("reader", rate_per_s=2)
    with closed.client(noisy) as noisy_client, closed.client(quiet) as quiet_client:
        answers = [noisy_client.get("/v1/stores/s/stock/A") for _ in range(10)]
        limited = [answer for answer in answers if answer.status_code == 429]
        assert limited, [answer.status_code for answer in answers]
        problem = api.assert_problem(limited[0], 429, "rate-limited")
        assert int(limited[0].headers["retry-after"]) >= 1
        assert noisy not in str(problem)
        assert quiet_client.get("/v1/stores/s/stock/A").status_code == 200


# -- what a write route accepts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/events", "text/plain"),
        ("/v1/events", "application/x-www-form-urlencoded"),
        ("/v1/events", None),
        ("/v1/stores/{store}/reservations", "text/plain"),
        ("/v1/stores/{store}/reservations", "multipart/form-data; boundary=x"),
        ("/v1/stores/{store}/reservations", None),
        ("/v1/stores/{store}/reservations/R-1/release", "text/plain"),
        ("/v1/stores/{store}/reservations/R-1/release", None),
    ],
)
def test_a_write_route_takes_only_json_and_records_nothing_else(
    closed: Closed, path: str, content_type: str | None
) -> None:
    store = unique("store")
    _stocked(closed, store, ("A", 5))
    assert api.reserve(closed.admin, store, "R-1", ("A", 1)).status_code == 201
    head = closed.head()
    bodies = {
        "/v1/events": ev.count(store, ("A", 0)),
        "/v1/stores/{store}/reservations": {"reservation_id": "R-2", "lines": ev.lines(("A", 1))},
        "/v1/stores/{store}/reservations/R-1/release": {},
    }
    headers = {} if content_type is None else {"content-type": content_type}
    response = closed.admin.post(
        path.format(store=store), content=orjson.dumps(bodies[path]), headers=headers
    )
    api.assert_problem(response, 415, "unsupported-media-type")
    assert closed.head() == head


def test_no_cross_origin_headers_unless_configured(closed: Closed) -> None:
    response = closed.admin.get("/v1/stores/s/stock/A", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = closed.admin.options(
        "/v1/events",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_a_request_for_another_host_answers_400(closed: Closed) -> None:
    for host in ("evil.example", "127.0.0.1.evil.example:80", ""):
        response = closed.admin.get("/v1/stores/s/stock/A", headers={"host": host})
        api.assert_problem(response, 400, "invalid-host")
    assert closed.admin.get("/healthz", headers={"host": "10.1.2.3:8000"}).status_code == 200
    assert closed.admin.get("/v1/stores/s/stock/A", headers={"host": "localhost:1"}).status_code == 200


# -- secrets ---------------------------------------------------------------------------------------


def test_no_token_appears_in_the_log_the_metrics_or_a_problem(closed: Closed) -> None:
    store = unique("store")
    token = closed.token("producer", stores=(store,))
    with closed.client(token) as till, closed.client(None) as anonymous:
        bodies = [
            till.post("/v1/events", json=ev.count(unique("other"), ("A", 0))).text,
            till.get("/v1/no-such-route").text,
            till.post("/v1/events", content=b"not json", headers={"content-type": "application/json"}).text,
            anonymous.get("/v1/stock/A", headers=bearer(token[:-1])).text,
            anonymous.get("/v1/stock/A", headers={"authorization": f"Bearer {token}x"}).text,
            closed.admin.get("/metrics").text,
            closed.admin.get("/openapi.json").text,
        ]
    for body in bodies:
        assert token not in body and token[len("sl_live_") :] not in body
    log = closed.server.log_tail(10**7)
    assert "sl_live_" not in log


# -- the open service, configured origins, the API's description -----------------------------------


def test_while_open_every_route_answers_and_the_history_names_no_principal(client: httpx.Client) -> None:
    store = unique("store")
    api.record(client, ev.receipt(store, ("A", 1)))
    assert api.reserve(client, store, "R-1", ("A", 1)).status_code == 201
    assert [entry["principal"] for entry in api.history(client, store)] == [None, None]


def test_configured_origins_hosts_and_metrics_auth(closed: Closed, module_serve) -> None:
    allowed = "https://shop.example"
    server = module_serve(
        closed.database_url,
        {
            "LEDGER_CORS_ORIGINS": allowed,
            "LEDGER_ALLOWED_HOSTS": "127.0.0.1, ledger.example",
            "LEDGER_METRICS_AUTH": "required",
        },
    )
    with server.client() as client:
        api.assert_problem(client.get("/metrics"), 401, "unauthorized")
        assert client.get("/metrics", headers=dict(closed.admin.headers)).status_code == 200
        assert client.get("/readyz").status_code == 200
        preflight = client.options(
            "/v1/events",
            headers={
                "origin": allowed,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type, x-request-id",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        for method in ("GET", "HEAD"):  # every GET answers HEAD, across origins too
            asked = {"origin": allowed, "access-control-request-method": method}
            preflight = client.options(
                "/v1/stock/A", headers=asked | {"access-control-request-headers": "authorization"}
            )
            assert preflight.status_code == 200, (method, preflight.text)
            assert preflight.headers["access-control-allow-origin"] == allowed
        other = client.options(
            "/v1/events", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
        # A refused preflight is a problem as every refusal is (it was "Disallowed CORS origin" as text).
        assert api.assert_problem(other, 400, "cors-preflight-refused")["detail"] == "Disallowed CORS origin"
        refused = client.get("/v1/stock/A", headers={"origin": allowed})
        api.assert_problem(refused, 401, "unauthorized")
        assert refused.headers["access-control-allow-origin"] == allowed
        # A page's script may read the request's id and when to retry.
        exposed = {name.strip() for name in refused.headers["access-control-expose-headers"].split(",")}
        assert {"x-request-id", "retry-after"} <= exposed
        named = client.get("/v1/stock/A", headers={"host": "ledger.example"} | dict(closed.admin.headers))
        assert named.status_code == 200
        api.assert_problem(client.get("/v1/stock/A", headers={"host": "evil.example"}), 400, "invalid-host")
    # Two Host headers (RFC 9112: 400): a proxy in front may route by the one not checked.
    token = dict(closed.admin.headers)["authorization"]
    for hosts in (("ledger.example", "evil.example"), ("evil.example", "ledger.example")):
        request = "GET /v1/stock/A HTTP/1.1\r\n" + "".join(f"Host: {host}\r\n" for host in hosts)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(f"{request}Authorization: {token}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ") and b"invalid-host" in answer, answer


@pytest.mark.parametrize("allowed_hosts", [None, "*"])
def test_an_http_1_1_request_without_a_host_header_answers_400_naming_it(
    closed: Closed, module_serve, allowed_hosts: str | None
) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request names its Host, else 400, whatever LEDGER_ALLOWED_HOSTS
    allows (`*` let it through). HTTP/1.0 may name none: the allowed names judge it, as before.
    The probes answer without one, as they answer any Host."""
    env = {} if allowed_hosts is None else {"LEDGER_ALLOWED_HOSTS": allowed_hosts}
    server = closed.server if allowed_hosts is None else module_serve(closed.database_url, env)
    token = dict(closed.admin.headers)["authorization"]
    tail = f"Authorization: {token}\r\nConnection: close\r\n\r\n".encode()
    for path in ("/v1/stock/A", "/metrics", "/v1/no-such-route", "/openapi.json"):
        status, headers, body = raw_answer(server.port, f"GET {path} HTTP/1.1\r\n".encode() + tail)
        assert status == 400, (path, body)
        assert headers["content-type"] == "application/problem+json"
        problem = orjson.loads(body)
        assert problem["type"] == "invalid-host" and "Host" in problem["detail"], problem
        assert "none" in problem["detail"], problem
    for probe in ("/healthz", "/readyz"):
        assert raw_answer(server.port, f"GET {probe} HTTP/1.1\r\n".encode() + tail)[0] == 200
    old, _, body = raw_answer(server.port, b"GET /v1/stock/A HTTP/1.0\r\n" + tail)
    assert old == (200 if allowed_hosts == "*" else 400), body


def test_the_openapi_document_declares_the_bearer_scheme_and_every_routes_refusals(closed: Closed) -> None:
    document = closed.admin.get("/openapi.json").json()
    scheme = document["components"]["securitySchemes"]["bearerToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    operations = [(path, op) for path, ops in document["paths"].items() for op in ops.values()]
    assert len(operations) >= 11
    for path, operation in operations:
        if path in ("/healthz", "/readyz"):
            assert operation["security"] == []
            continue
        assert operation["security"] == [{"bearerToken": []}], path
        assert {"400", "401", "403", "429"} <= set(operation["responses"]), path
        assert "Retry-After" in operation["responses"]["429"]["headers"]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        assert operation["x-required-role"] in ("reader", "producer", "operator")
