"""kill -9 of the service, or of its writer process alone, while events stream in: every acknowledged
event is in the ledger exactly once; and while clients place orders by sourcing with `reserve`: every
order answered is reserved once, where its answer says, and the same request again answers the same."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import psutil
import pytest
from support import api, db
from support import events as ev
from support.ids import unique

from ledger.writer.socket_path import lock_path

pytestmark = pytest.mark.slow

STREAMS = 4
ACKNOWLEDGED_BEFORE_KILL = 150
STREAM_DEADLINE_S = 60.0
SKUS = ("SKU-1", "SKU-2", "SKU-3")
RESEND_BATCH = 500
EVENTS_PER_REQUEST = 3  # the writer-process kill: arrays, so that batches carry several requests' events
ACKNOWLEDGED_AFTER_RESTART = 60


class Stream(threading.Thread):
    """Sends receipts with unique ids one by one until the server stops answering."""

    def __init__(self, url: str, store: str, number: int) -> None:
        super().__init__(daemon=True)
        self.url, self.store, self.number = url, store, number
        self.sent: list[dict[str, Any]] = []
        self.acknowledged: dict[str, int] = {}  # event id -> position
        self.failure: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + STREAM_DEADLINE_S
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            for i in range(100_000):
                if time.monotonic() > deadline:
                    return
                event = ev.receipt(
                    self.store,
                    (SKUS[i % len(SKUS)], 1 + (i + self.number) % 7),
                    event_id=f"s{self.number}-{i}",
                )
                self.sent.append(event)
                try:
                    response = client.post("/v1/events", json=event)
                except httpx.TransportError:
                    return  # the server is gone: this last one may or may not be recorded
                if response.status_code != 200:
                    return  # e.g. 503 while shutting down: the outcome is not known
                [result] = response.json()["results"]
                if result["outcome"] != "accepted":
                    self.failure = f"unexpected answer {result}"
                    return
                self.acknowledged[event["id"]] = result["position"]


def _acknowledged(streams: list[Stream]) -> int:
    return sum(len(s.acknowledged) for s in streams)


def _sent_again(
    server: Any, store: str, streams: list[Any]
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any], list[dict[str, Any]]]:
    """Sends every stream's events again: each acknowledged one must answer as a duplicate of its
    accepted original, at its position; one whose answer was lost (the server or its writer died)
    was recorded before or is now, either way once. Returns what was sent, what was acknowledged,
    the SKUs' levels once they include every event, and the store's history."""
    sent = [event for stream in streams for event in stream.sent]
    acknowledged = {k: v for stream in streams for k, v in stream.acknowledged.items()}
    with server.client() as client:
        answers = []
        for start in range(0, len(sent), RESEND_BATCH):
            answers += api.post_events(client, *sent[start : start + RESEND_BATCH])
        for event, answer in zip(sent, answers, strict=True):
            if event["id"] in acknowledged:
                assert answer["outcome"] == "duplicate", (event["id"], answer)
                assert answer["original"] == {
                    "outcome": "accepted",
                    "reason": None,
                    "position": acknowledged[event["id"]],
                }, (event["id"], answer)
            else:
                assert answer["outcome"] in ("accepted", "duplicate"), answer
        head = max(a.get("position") or a["original"]["position"] for a in answers)
        levels = {sku: api.level(client, store, sku, min_position=head) for sku in SKUS}
        history = api.history(client, store)
    return sent, acknowledged, levels, history


def _on_hand_sent(sent: list[dict[str, Any]]) -> dict[str, int]:
    """Each SKU's units in the receipts sent."""
    expected: dict[str, int] = defaultdict(int)
    for event in sent:
        for line in event["data"]["lines"]:
            expected[line["sku"]] += line["qty"]
    return expected


def test_every_acknowledged_event_survives_a_kill_9_exactly_once(database_url, serve):
    server = serve(database_url)
    store = unique("store")
    streams = [Stream(server.url, store, n) for n in range(STREAMS)]
    for stream in streams:
        stream.start()
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while _acknowledged(streams) < ACKNOWLEDGED_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _acknowledged(streams) >= ACKNOWLEDGED_BEFORE_KILL, "the streams did not get going"
    server.kill()
    for stream in streams:
        stream.join(STREAM_DEADLINE_S)
        assert not stream.is_alive()
        assert stream.failure is None, stream.failure

    server.start()
    sent, acknowledged, levels, history = _sent_again(server, store, streams)
    expected = _on_hand_sent(sent)
    assert db.event_count(database_url) == len(sent)
    keys = db.query(database_url, "SELECT event_id, position FROM ledger_event_keys")
    assert len(keys) == len(sent)
    assert {
        row["event_id"]: row["position"] for row in keys if row["event_id"] in acknowledged
    } == acknowledged
    assert len(history) == len(sent)
    for sku in SKUS:
        entries = [e for e in history if e["sku"] == sku]
        assert sum(e["on_hand_delta"] for e in entries) == expected[sku]
        assert entries[-1]["on_hand"] == expected[sku]
        assert db.level_rows(database_url, store)[sku]["on_hand"] == expected[sku]
        assert api.levels_tuple(levels[sku]) == (expected[sku], 0, expected[sku], 0)


class StreamThrough(threading.Thread):
    """Sends arrays of receipts with unique ids until stopped, going on through 503 answers (the
    writer is away: those events' outcomes are not known until they are sent again)."""

    def __init__(self, url: str, store: str, number: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.store, self.number, self.stop = url, store, number, stop
        self.sent: list[dict[str, Any]] = []
        self.acknowledged: dict[str, int] = {}  # event id -> position
        self.failure: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + STREAM_DEADLINE_S
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            for i in range(100_000):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                events = [
                    ev.receipt(
                        self.store,
                        (SKUS[(i + j) % len(SKUS)], 1 + (i + self.number) % 7),
                        event_id=f"w{self.number}-{i}-{j}",
                    )
                    for j in range(EVENTS_PER_REQUEST)
                ]
                self.sent += events
                try:
                    response = client.post("/v1/events", json=events)
                except httpx.TransportError as error:
                    self.failure = f"the HTTP worker is not the one killed: {error!r}"
                    return
                if response.status_code == 503:
                    time.sleep(0.05)
                    continue
                if response.status_code != 200:
                    self.failure = f"unexpected answer {response.status_code} {response.text}"
                    return
                for event, result in zip(events, response.json()["results"], strict=True):
                    if result["outcome"] != "accepted":
                        self.failure = f"unexpected answer {result}"
                        return
                    self.acknowledged[event["id"]] = result["position"]


def _writer_process(server: Any, socket_path: str) -> psutil.Process:
    """The service's process that listens on the writer's socket."""
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if any(conn.laddr == socket_path for conn in child.net_connections(kind="unix")):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process of the service listens on {socket_path}")


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def serve_at_a_socket_of_its_own(serve) -> Iterator[tuple[Callable[[str], Any], str]]:
    """`serve(database_url, env)` with LEDGER_WRITER_SOCKET named, in the temporary directory (a test's
    tmp_path is too long for a socket's address), and that path. Its services are stopped first,
    then the socket and the lock file beside it are removed: a service keeps the lock file of a
    path it was given, and one that stops after its lock file is removed makes it again."""
    socket_path = os.path.join(tempfile.gettempdir(), f"ledger-crash-{uuid.uuid4().hex[:12]}.sock")
    started: list[Any] = []

    def start(database_url: str, env: dict[str, str] | None = None) -> Any:
        started.append(serve(database_url, {**(env or {}), "LEDGER_WRITER_SOCKET": socket_path}))
        return started[-1]

    yield start, socket_path
    for server in started:
        server.stop()
    for path in (socket_path, lock_path(socket_path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_every_acknowledged_event_survives_a_kill_9_of_the_writer_process_alone(
    database_url, serve_at_a_socket_of_its_own
):
    """The HTTP worker stays; the writer process dies with batches on their way (on PostgreSQL, one
    may be in flight while the next is decided; on SQLite each is recorded before the next is
    taken) and its supervisor starts another, which the worker reconnects to. What was acknowledged
    stays, once; what was answered 503 is recorded at most once, and sending it again says so."""
    start, socket_path = serve_at_a_socket_of_its_own
    server = start(database_url)
    store = unique("store")
    stop = threading.Event()
    streams = [StreamThrough(server.url, store, n, stop) for n in range(STREAMS)]
    for stream in streams:
        stream.start()
    try:
        _wait_for(lambda: _acknowledged(streams) >= ACKNOWLEDGED_BEFORE_KILL, "the streams did not get going")
        writer = _writer_process(server, socket_path)
        writer.kill()
        writer.wait(STREAM_DEADLINE_S)
        at_kill = _acknowledged(streams)
        _wait_for(
            lambda: (
                _acknowledged(streams) >= at_kill + ACKNOWLEDGED_AFTER_RESTART
                or any(s.failure for s in streams)
            ),
            "no write was acknowledged after the writer process was started again",
        )
    finally:
        stop.set()
        for stream in streams:
            stream.join(STREAM_DEADLINE_S)
    for stream in streams:
        assert not stream.is_alive()
        assert stream.failure is None, stream.failure
    assert _writer_process(server, socket_path).pid != writer.pid

    sent, _, levels, history = _sent_again(server, store, streams)
    expected = _on_hand_sent(sent)
    assert db.event_count(database_url) == len(sent)
    assert len(history) == len(sent)
    assert sorted(entry["event_id"] for entry in history) == sorted(event["id"] for event in sent)
    for sku in SKUS:
        assert db.level_rows(database_url, store)[sku]["on_hand"] == expected[sku]
        assert api.levels_tuple(levels[sku]) == (expected[sku], 0, expected[sku], 0)


# -- sourcing with `reserve` (CONTRACT §6) -----------------------------------------------------------

SOURCING_STORES = 4
SOURCING_STOCK_UNITS = {"A": 16, "B": 8}  # at each store: some 32 of the 80 orders fit (each takes 1 B)
SOURCING_CLIENTS = 4
ORDERS_PER_CLIENT = 20
ANSWERED_BEFORE_KILL = 20
SOURCING_SOURCE = "ledger/sourcing"  # the source of the commands sourcing records (ledger/api/sourcing.py)
RETRY_WAIT_S = 0.05
# As production runs it (tests/production/service.py): the writer in its own process, two HTTP workers.
PRODUCTION_SHAPE = {"LEDGER_HTTP_WORKERS": "2", "LEDGER_WRITER_PROCESS": "true"}


def _order(stores: list[str], run: str, client: int, number: int) -> dict[str, Any]:
    """One order of 1 to 3 A and 1 B, over the stores in an order of its own, at most two of them."""
    first = (client + number) % len(stores)
    return {
        "lines": ev.lines(("A", 1 + (client + number) % 3), ("B", 1)),
        "stores": stores[first:] + stores[:first],
        "max_stores": 2,
        "reserve": {"reservation_id": f"{run}-c{client}-{number}", "order_id": f"o-{client}-{number}"},
    }


def _reservation_id(order: dict[str, Any]) -> str:
    return str(order["reserve"]["reservation_id"])


class OrderClient:
    """A client placing its orders one after another. One whose answer never came (the connection
    broke, or a 5xx) is sent again, as a client whose request timed out sends it, until it has an
    answer; an order's answer is the first one it had."""

    def __init__(self, orders: list[dict[str, Any]]) -> None:
        self.orders = orders
        self.pending = list(orders)  # the next one to send first: one without an answer stays there
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}  # reservation id -> (status, body)
        self.unanswered: set[str] = set()  # the orders sent again after a try that had no answer
        self.failure: str | None = None

    def send(self, url: str, through_outage: bool) -> None:
        """Until every order has its answer; or, unless `through_outage`, until one has none (the
        service is gone: the order is sent again when it is back)."""
        deadline = time.monotonic() + STREAM_DEADLINE_S
        with httpx.Client(base_url=url, timeout=10.0) as client:
            while self.pending:
                if time.monotonic() > deadline:
                    self.failure = f"{len(self.pending)} orders not answered within {STREAM_DEADLINE_S} s"
                    return
                order = self.pending[0]
                try:
                    response: httpx.Response | None = client.post("/v1/sourcing", json=order)
                except httpx.TransportError:
                    response = None
                if response is None or response.status_code >= 500:
                    self.unanswered.add(_reservation_id(order))
                    if not through_outage:
                        return
                    time.sleep(RETRY_WAIT_S)
                    continue
                if response.status_code not in (200, 409):
                    self.failure = f"unexpected answer {response.status_code} {response.text}"
                    return
                self.answers[_reservation_id(order)] = (response.status_code, response.json())
                self.pending.pop(0)


def _send_orders(clients: list[OrderClient], url: str, through_outage: bool) -> list[threading.Thread]:
    threads = [threading.Thread(target=c.send, args=(url, through_outage), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    return threads


def _joined(threads: list[threading.Thread], clients: list[OrderClient]) -> None:
    for thread in threads:
        thread.join(STREAM_DEADLINE_S)
        assert not thread.is_alive()
    for client in clients:
        assert client.failure is None, client.failure


def _answered(clients: list[OrderClient]) -> int:
    return sum(len(c.answers) for c in clients)


@pytest.mark.parametrize("victim", ["the service", "its writer process"])
def test_orders_placed_by_sourcing_are_reserved_once_through_a_kill_9(
    database_url, serve_at_a_socket_of_its_own, victim
):
    """Clients place orders by sourcing with `reserve` while the service (or its writer process
    alone) is killed; each sends again what had no answer. Every order answered 200 is reserved
    once, by one command, where its answer says; one refused holds nothing; the levels' reserved
    units are those the reservations hold, never more than on hand; and the same request again
    answers what the first answer said."""
    start, socket_path = serve_at_a_socket_of_its_own
    server = start(database_url, PRODUCTION_SHAPE)
    stores = [unique(f"src{n}") for n in range(SOURCING_STORES)]
    with server.client() as client:
        for store in stores:
            api.record(client, ev.receipt(store, *SOURCING_STOCK_UNITS.items()))
    run = unique("order")
    clients = [
        OrderClient([_order(stores, run, c, n) for n in range(ORDERS_PER_CLIENT)])
        for c in range(SOURCING_CLIENTS)
    ]
    through_outage = victim == "its writer process"  # the HTTP workers stay, and answer 503 meanwhile
    threads = _send_orders(clients, server.url, through_outage)
    try:
        _wait_for(
            lambda: _answered(clients) >= ANSWERED_BEFORE_KILL or any(c.failure for c in clients),
            "the clients did not get going",
        )
        if victim == "the service":
            server.kill()
            _joined(threads, clients)
            server.start()
            threads = _send_orders(clients, server.url, through_outage=True)
        else:
            writer = _writer_process(server, socket_path)
            writer.kill()
            writer.wait(STREAM_DEADLINE_S)
    finally:
        _joined(threads, clients)
    assert any(c.unanswered for c in clients), "no order was caught by the kill"
    answers = {rid: answer for c in clients for rid, answer in c.answers.items()}
    orders = {_reservation_id(order): order for c in clients for order in c.orders}
    assert answers.keys() == orders.keys()
    placed = {rid: body for rid, (status, body) in answers.items() if status == 200}
    assert 0 < len(placed) < len(orders), "the stock is scarce: some orders fit, some do not"
    for status, body in answers.values():
        assert status == 200 or body["type"] == "insufficient-stock", (status, body)

    _each_order_answers_the_same_again(server, orders, answers)
    _each_order_placed_is_reserved_once_where_its_answer_says(database_url, stores, orders, placed)


def _each_order_answers_the_same_again(
    server: Any, orders: dict[str, dict[str, Any]], answers: dict[str, tuple[int, dict[str, Any]]]
) -> None:
    """The same request again: a placed order answers its first answer's body (allocations,
    reservation, position); a refused one is refused again (the stock only went down since)."""
    with server.client() as client:
        for rid, order in orders.items():
            again = client.post("/v1/sourcing", json=order)
            status, body = answers[rid]
            if status == 200:
                assert (again.status_code, again.json()) == (200, body), (rid, again.text)
            else:
                assert again.status_code == 409 and again.json()["type"] == "insufficient-stock", again.text


def _each_order_placed_is_reserved_once_where_its_answer_says(
    database_url: str, stores: list[str], orders: dict[str, dict[str, Any]], placed: dict[str, dict[str, Any]]
) -> None:
    marks = ", ".join("%s" for _ in stores)
    rows = db.query(
        database_url,
        "SELECT store_id, reservation_id, lines, placed_at_position FROM ledger_reservations "
        f"WHERE store_id IN ({marks})",
        tuple(stores),
    )
    parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    held_units: Counter[tuple[str, str]] = Counter()
    for row in rows:
        parts[row["reservation_id"]].append(row)
        for sku, qty, shipped, released in orjson.loads(row["lines"]):
            held_units[(row["store_id"], sku)] += qty - shipped - released
    assert parts.keys() == placed.keys()  # nothing held for an order refused
    for rid, body in placed.items():
        allocated = {
            (a["store"], line["sku"], line["qty"]) for a in body["allocations"] for line in a["lines"]
        }
        held = {
            (row["store_id"], sku, qty) for row in parts[rid] for sku, qty, *_ in orjson.loads(row["lines"])
        }
        assert held == allocated, rid  # where its answer says, and nowhere else
        assert {row["placed_at_position"] for row in parts[rid]} == {body["position"]}, rid  # one command
        summed: Counter[str] = Counter()
        for _, sku, qty in held:
            summed[sku] += qty
        assert summed == {line["sku"]: line["qty"] for line in orders[rid]["lines"]}, rid
    keys = db.query(
        database_url, "SELECT event_id, position FROM ledger_event_keys WHERE source = %s", (SOURCING_SOURCE,)
    )
    assert {row["event_id"]: row["position"] for row in keys} == {
        rid: b["position"] for rid, b in placed.items()
    }
    # The log: the receipts, and each order's parts once (a command is logged as one event per store).
    assert db.event_count(database_url) == len(stores) + sum(len(b["allocations"]) for b in placed.values())
    for store in stores:
        levels = db.level_rows(database_url, store)
        for sku, units in SOURCING_STOCK_UNITS.items():
            level = levels[sku]
            assert level["on_hand"] == units
            assert level["reserved"] == held_units[(store, sku)], (store, sku, level)
            assert 0 <= level["reserved"] <= level["on_hand"], (store, sku, level)  # never oversold
