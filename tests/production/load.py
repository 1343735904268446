"""Load on a running service: HTTP writers and readers, a /readyz watcher and a Kafka producer.

Each keeps every answer it got (with when it was sent and answered), so that a test can say what
was acknowledged and check every answer against the contract afterwards."""

from __future__ import annotations

import http.client
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from kafka import KafkaProducer
from kafka_harness import Sent
from support.events import envelope

from production.service import ProductionService

PROBLEM_JSON = "application/problem+json"
HTTP_SOURCE = "tests/production/http"
KAFKA_SOURCE = "tests/production/kafka"
# A client waits this much longer than the service's LEDGER_REQUEST_TIMEOUT_S before it calls the
# request hung; a read that reaches an unavailable database also waits for a pooled connection
# (5 s in the library's PostgreSQL datastore).
ANSWER_MARGIN_S = 10.0
EVENTS_PER_REQUEST_MAX = 8
LINES_PER_EVENT_MAX = 3
# How long a loop sleeps after an answer that asks it to come back (503, or the service down).
RETRY_PAUSE_S = 0.2
# Every RESERVATION_EVERY-th request of a writer places a reservation through the fast path.
RESERVATION_EVERY = 4
JOIN_S = 60.0


@dataclass(frozen=True)
class Catalogue:
    stores: list[str]
    skus: list[str]


def new_catalogue(prefix: str, stores: int = 4, skus: int = 12) -> Catalogue:
    return Catalogue([f"{prefix}-S{i}" for i in range(stores)], [f"{prefix}-K{i}" for i in range(skus)])


def random_envelope(rng: random.Random, catalogue: Catalogue, event_id: str, source: str) -> dict[str, Any]:
    """One event of a mix that exercises every level: receipts, sales at the till and online
    (which may be refused), reservations (which may be refused) and adjustments."""
    store = rng.choice(catalogue.stores)
    skus = rng.sample(catalogue.skus, rng.randint(1, LINES_PER_EVENT_MAX))
    kind = rng.random()
    data: dict[str, Any]
    if kind < 0.4:
        event_type, data = "stock.receipt", {"lines": [{"sku": s, "qty": rng.randint(1, 5)} for s in skus]}
    elif kind < 0.6:
        event_type, data = "stock.pos_sale", {"lines": [{"sku": s, "qty": rng.randint(1, 2)} for s in skus]}
    elif kind < 0.75:
        event_type, data = "stock.sale", {"lines": [{"sku": s, "qty": 1} for s in skus]}
    elif kind < 0.9:
        data = {"reservation_id": f"r-{event_id}", "lines": [{"sku": s, "qty": 1} for s in skus]}
        event_type = "stock.reservation"
    else:
        data = {"reason": "damage", "lines": [{"sku": s, "qty": rng.choice((-1, 1))} for s in skus]}
        event_type = "stock.adjustment"
    return envelope(event_type, store, data, event_id=event_id, source=source)


@dataclass
class Answer:
    """One HTTP exchange: what was asked, when, and what came back (or the client's error)."""

    what: str
    sent_at: float
    answered_at: float
    status: int | None
    content_type: str = ""
    retry_after: str | None = None
    body: Any = None
    error: str | None = None
    connection_dropped: bool = False


def _answer(what: str, sent_at: float, response: httpx.Response) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = response.text[:500]
    return Answer(
        what,
        sent_at,
        time.monotonic(),
        response.status_code,
        response.headers.get("content-type", "").split(";")[0],
        response.headers.get("retry-after"),
        body,
    )


@dataclass
class Acknowledged:
    """What the service said it recorded: per (source, id) the outcome and position (a duplicate's
    are its original's), and per (store, reservation id) the position of a reservation placed
    through the REST route."""

    events: dict[tuple[str, str], tuple[str, int | None]] = field(default_factory=dict)
    reservations: dict[tuple[str, str], int | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note_results(self, results: list[dict[str, Any]]) -> None:
        with self.lock:
            for result in results:
                outcome, position = effective(result)
                self.events.setdefault((result["source"], result["id"]), (outcome, position))


def effective(result: dict[str, Any]) -> tuple[str, int | None]:
    """An event's own outcome and position: a duplicate's are those of the first time."""
    if result["outcome"] == "duplicate":
        original = result["original"]
        return original["outcome"], original.get("position")
    return result["outcome"], result.get("position")


class _Loop:
    """A thread that runs `step` until stopped (or it returns False), keeping every Answer."""

    def __init__(self, name: str, threads: int) -> None:
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]

    def keep(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is None:  # never started
                continue
            thread.join(JOIN_S)
            assert not thread.is_alive(), f"{thread.name} did not stop in {JOIN_S} s"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def done(self) -> bool:
        return all(not thread.is_alive() for thread in self._threads)

    def _run(self, index: int) -> None:
        raise NotImplementedError


class HttpWriters(_Loop):
    """Threads that POST events (arrays of 1 to EVENTS_PER_REQUEST_MAX) and place reservations,
    each request after the answer to the one before. A batch that is not answered (503, the
    service down) is sent again, the same events with the same ids, until it is answered or the
    writers stop: a duplicate's answer carries its original's outcome.

    strict: the first answer that is not a success stops that thread (the test then fails on it)."""

    def __init__(
        self,
        service: ProductionService,
        catalogue: Catalogue,
        acknowledged: Acknowledged,
        *,
        threads: int,
        strict: bool,
        requests_max: int | None = None,
        pause_s: float = 0.0,
        seed: int = 0,
        name: str = "w",
    ) -> None:
        super().__init__(f"http-writer-{name}", threads)
        self.service = service
        self.catalogue = catalogue
        self.acknowledged = acknowledged
        self.strict = strict
        self.requests_max = requests_max
        self.pause_s = pause_s
        self.seed = seed
        self.name = name
        self.timeout_s = service.request_timeout_s + ANSWER_MARGIN_S

    def _run(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{self.name}-{index}")
        ids = itertools.count(1)
        client: httpx.Client | None = None
        url = ""
        pending: tuple[str, str, Any] | None = None  # (what, path, body), sent again until answered
        sent = 0
        while not self.stopping and (self.requests_max is None or sent < self.requests_max):
            if self.service.url != url:
                if client is not None:
                    client.close()
                url = self.service.url
                client = httpx.Client(base_url=url, timeout=self.timeout_s)
            assert client is not None
            if pending is None:
                pending = self._next_request(rng, f"{self.name}{index}-{next(ids)}", sent)
            what, path, body = pending
            started = time.monotonic()
            try:
                response = client.post(path, json=body)
            except httpx.TimeoutException as error:
                self.keep(Answer(what, started, time.monotonic(), None, error=f"hung: {error!r}"))
                break  # a request that hangs past the request timeout fails the test
            except httpx.TransportError as error:
                self.keep(Answer(what, started, time.monotonic(), None, error=repr(error)))
                if self.strict:
                    break
                self.pause(RETRY_PAUSE_S)
                continue
            answer = _answer(what, started, response)
            self.keep(answer)
            sent += 1
            if self._settled(answer):
                pending = None
            elif self.strict:
                break
            else:
                self.pause(RETRY_PAUSE_S)
                continue
            if self.pause_s:
                self.pause(self.pause_s)
        if client is not None:
            client.close()

    def _next_request(self, rng: random.Random, key: str, sent: int) -> tuple[str, str, Any]:
        if sent % RESERVATION_EVERY == RESERVATION_EVERY - 1:
            store = rng.choice(self.catalogue.stores)
            skus = rng.sample(self.catalogue.skus, rng.randint(1, LINES_PER_EVENT_MAX))
            body = {"reservation_id": f"rest-{key}", "lines": [{"sku": s, "qty": 1} for s in skus]}
            return "reserve", f"/v1/stores/{store}/reservations", body
        count = rng.randint(1, EVENTS_PER_REQUEST_MAX)
        envelopes = [random_envelope(rng, self.catalogue, f"{key}-{i}", HTTP_SOURCE) for i in range(count)]
        return "events", "/v1/events", envelopes if count > 1 else envelopes[0]

    def _settled(self, answer: Answer) -> bool:
        """Was the request answered for good (recorded, or refused for a reason of its own)?"""
        if answer.what == "events" and answer.status == 200:
            self.acknowledged.note_results(answer.body["results"])
            return True
        if answer.what == "reserve" and answer.status in (200, 201):
            # 201: placed by this request, at this position; 200: placed before (a request whose
            # answer was lost), the position is the reservation's latest.
            key = (answer.body["store_id"], answer.body["reservation_id"])
            position = int(answer.body["position"]) if answer.status == 201 else None
            with self.acknowledged.lock:
                self.acknowledged.reservations.setdefault(key, position)
            return True
        # 409: refused (not enough stock), recorded as a rejected event of its own.
        return answer.what == "reserve" and answer.status == 409


# What the readers ask for: each reaches the database (nothing of it is cached in memory).
def _reads(catalogue: Catalogue, rng: random.Random, index: int) -> tuple[str, str]:
    store = rng.choice(catalogue.stores)
    choice = index % 3
    if choice == 0:
        return "sku-across-stores", f"/v1/stock/{rng.choice(catalogue.skus)}"
    if choice == 1:
        return "history", f"/v1/stores/{store}/history?limit=5"
    return "uncached-level", f"/v1/stores/{store}/stock/never-{index}"


class HttpReaders(_Loop):
    """Threads that read over one keep-alive connection each, as a client's connection pool would;
    a connection the service closes is noted (connection_dropped) and opened again."""

    def __init__(self, service: ProductionService, catalogue: Catalogue, *, threads: int, pause_s: float):
        super().__init__("http-reader", threads)
        self.service = service
        self.catalogue = catalogue
        self.pause_s = pause_s
        self.timeout_s = service.request_timeout_s + ANSWER_MARGIN_S

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        connection: http.client.HTTPConnection | None = None
        url = ""
        for n in itertools.count(index * 1_000_000):
            if self.stopping:
                break
            if connection is None or self.service.url != url:
                url = self.service.url
                parts = urlsplit(url)
                connection = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=self.timeout_s
                )
            what, path = _reads(self.catalogue, rng, n)
            answer = self._get(connection, what, path)
            self.keep(answer)
            if answer.connection_dropped or answer.status is None:
                connection.close()
                connection = None
            self.pause(self.pause_s)
        if connection is not None:
            connection.close()

    def _get(self, connection: http.client.HTTPConnection, what: str, path: str) -> Answer:
        started = time.monotonic()
        reused = connection.sock is not None
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            raw = response.read()
        except TimeoutError as error:
            return Answer(what, started, time.monotonic(), None, error=f"hung: {error!r}")
        except (http.client.RemoteDisconnected, ConnectionError) as error:
            # On a connection that served an answer before, the service closed it after that one.
            return Answer(what, started, time.monotonic(), None, error=repr(error), connection_dropped=reused)
        except OSError as error:
            return Answer(what, started, time.monotonic(), None, error=repr(error))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw[:500].decode(errors="replace")
        return Answer(
            what,
            started,
            time.monotonic(),
            response.status,
            (response.getheader("content-type") or "").split(";")[0],
            response.getheader("retry-after"),
            body,
            connection_dropped=response.will_close,
        )


class ReadinessWatch(_Loop):
    """Asks /readyz every `interval_s` and keeps each answer."""

    def __init__(self, service: ProductionService, interval_s: float = 0.25) -> None:
        super().__init__("readyz", 1)
        self.service = service
        self.interval_s = interval_s

    def _run(self, index: int) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                with httpx.Client(base_url=self.service.url, timeout=ANSWER_MARGIN_S * 2) as client:
                    self.keep(_answer("readyz", started, client.get("/readyz")))
            except httpx.HTTPError as error:
                self.keep(Answer("readyz", started, time.monotonic(), None, error=repr(error)))
            self.pause(self.interval_s)

    def statuses_between(self, start: float, end: float) -> list[int | None]:
        """The answers to the questions asked after `start` and answered before `end`."""
        return [a.status for a in self.answers if a.sent_at >= start and a.answered_at <= end]


# The producer's own limits: a broker that has gone away fails a send within seconds.
PRODUCER_TIMEOUT_MS = 5000


class KafkaLoad(_Loop):
    """Produces events to the intake's topic, `chunk` at a time every `pause_s`, until stopped or
    `events_max` were sent. `sent` holds every event the broker acknowledged; `uncertain` those
    whose send failed (they may or may not be in the topic)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        catalogue: Catalogue,
        *,
        chunk: int,
        pause_s: float,
        events_max: int | None = None,
        seed: int = 0,
        name: str = "k",
    ) -> None:
        super().__init__(f"kafka-producer-{name}", 1)
        self.bootstrap = bootstrap
        self.topic = topic
        self.catalogue = catalogue
        self.chunk = chunk
        self.pause_s = pause_s
        self.events_max = events_max
        self.seed = seed
        self.name = name
        self.sent: dict[tuple[str, str], Sent] = {}
        self.uncertain: set[tuple[str, str]] = set()
        self.errors: list[str] = []

    def _run(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{self.name}")
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            request_timeout_ms=PRODUCER_TIMEOUT_MS,
            max_block_ms=PRODUCER_TIMEOUT_MS,
        )
        ids = itertools.count(1)
        try:
            while not self.stopping and (self.events_max is None or len(self.sent) < self.events_max):
                chunk = self.chunk
                if self.events_max is not None:
                    chunk = min(chunk, self.events_max - len(self.sent) - len(self.uncertain))
                    if chunk <= 0:
                        break
                self._send_chunk(producer, rng, ids, chunk)
                self.pause(self.pause_s)
        finally:
            producer.close(PRODUCER_TIMEOUT_MS / 1000)

    def _send_chunk(
        self, producer: KafkaProducer, rng: random.Random, ids: itertools.count[int], chunk: int
    ) -> None:
        pending = []
        for _ in range(chunk):
            body = random_envelope(rng, self.catalogue, f"{self.name}-{next(ids)}", KAFKA_SOURCE)
            key = (body["source"], body["id"])
            record_key, value = body["subject"].encode(), json.dumps(body).encode()
            try:
                future = producer.send(self.topic, key=record_key, value=value)
            except Exception as error:  # noqa: BLE001 - the broker is away: this one may be lost
                self.uncertain.add(key)
                self.errors.append(repr(error))
                continue
            pending.append((key, record_key, value, future))
        for key, record_key, value, future in pending:
            try:
                meta = future.get(timeout=PRODUCER_TIMEOUT_MS / 1000 * 3)
                self.sent[key] = Sent(record_key, value, meta.partition, meta.offset)
            except Exception as error:  # noqa: BLE001 - not acknowledged: it may be in the topic or not
                self.uncertain.add(key)
                self.errors.append(repr(error))


def run_until(condition: Callable[[], bool], deadline_s: float, what: str, poll_s: float = 0.2) -> None:
    """Waits for `condition`; fails the test with `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {deadline_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
