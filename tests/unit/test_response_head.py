"""The request id in the response head (ledger/api/response_head.py): under the ledger's own HTTP
protocol the connection's transport writes it into the head, with no wrapper around `send`; under
any other server the telemetry wraps `send`. Either way every answer carries it exactly once, and
the metrics count the status that was written."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from support.transports import CountedTransport
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ledger.api.connections import DeadlineProtocol
from ledger.api.http_metrics import HttpMetrics
from ledger.api.response_head import REQUEST_ID_KEY, STATUS_KEY, ResponseHead
from ledger.api.telemetry import ROUTE_KEY, RequestTelemetry

Scope = MutableMapping[str, Any]
ROUTE = "/v1/things/{thing}"
LIMITS = {"header_timeout_s": 10.0, "body_timeout_s": 10.0, "header_bytes_max": 8192}


def test_the_id_goes_before_the_blank_line_that_ends_the_head_and_the_status_is_noted() -> None:
    head = ResponseHead()
    scope: dict[str, Any] = {REQUEST_ID_KEY: b"abc-123"}
    head.pending = scope
    written = head.written(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n")
    assert written == b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\nx-request-id: abc-123\r\n\r\n"
    assert scope[STATUS_KEY] == 201
    assert head.pending is None  # one head carries it, not the next


def test_an_interim_answer_passes_without_the_id_and_the_final_head_gets_it() -> None:
    head = ResponseHead()
    scope: dict[str, Any] = {REQUEST_ID_KEY: b"abc-123"}
    head.pending = scope
    assert head.written(b"HTTP/1.1 100 Continue\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert head.pending is scope and STATUS_KEY not in scope
    assert head.written(b"HTTP/1.1 200 OK\r\n\r\n") == b"HTTP/1.1 200 OK\r\nx-request-id: abc-123\r\n\r\n"
    assert scope[STATUS_KEY] == 200


class Inner:
    """Answers `status` (or the status its path names: /201); notes whether the `send` it was given
    is the server's own. `after`: turns of the event loop it still takes once it has answered, as
    a file response or a background task does; `gate`: what it waits for before answering."""

    def __init__(self, status: int, *, fail: bool = False, after: int = 0) -> None:
        self.status = status
        self.fail = fail
        self.after = after
        self.gate: asyncio.Event | None = None
        self.sends_were_the_servers: list[bool] = []

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            return
        self.sends_were_the_servers.append(getattr(send, "__self__", None).__class__ is RequestResponseCycle)
        scope[ROUTE_KEY] = ROUTE
        if scope["method"] == "POST":
            await receive()
        if self.fail:
            raise RuntimeError("failed before answering")
        if self.gate is not None:
            await self.gate.wait()
        named = scope["path"].rsplit("/", 1)[-1]
        status = int(named) if named.isdigit() and len(named) == 3 else self.status
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
        for _ in range(self.after):
            await asyncio.sleep(0)


class Connection:
    """One connection of `protocol_class` to the telemetry around `inner`, over a transport that
    keeps what is written."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol_class: Any, inner: Inner) -> None:
        self.loop = loop
        self.metrics = HttpMetrics()
        app = RequestTelemetry(inner, [], self.metrics, access_log_on=False)
        config = Config(app, access_log=False, log_config=None, date_header=False, server_header=False)
        config.load()
        limits = LIMITS if protocol_class is DeadlineProtocol else {}
        self.protocol = protocol_class(config, ServerState(), {}, loop, **limits)
        self.real = CountedTransport()
        self.protocol.connection_made(self.real)

    def receive(self, data: bytes, turns: int = 5) -> None:
        self.protocol.data_received(data)
        self.turn(turns)

    def turn(self, turns: int = 5) -> None:
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    def lose(self) -> None:
        self.protocol.connection_lost(None)
        self.turn(1)

    @property
    def written(self) -> bytes:
        return b"".join(data for kind, data in self.real.calls if kind == "write")


def _serve(
    loop: asyncio.AbstractEventLoop, protocol_class: Any, inner: Inner, *requests: bytes
) -> tuple[bytes, HttpMetrics]:
    connection = Connection(loop, protocol_class, inner)
    for request in requests:
        connection.receive(request)
    connection.lose()
    return connection.written, connection.metrics


def _counts(metrics: HttpMetrics) -> dict[tuple[str, str, int], int]:
    return {key: sum(series.snapshot()[0]) for key, series in metrics.series.items()}


GET = b"GET /v1/things/1 HTTP/1.1\r\nHost: x\r\n\r\n"


def test_the_ledgers_server_writes_the_id_into_each_head_once_without_wrapping_send(
    loop: asyncio.AbstractEventLoop,
) -> None:
    inner = Inner(201)
    written, metrics = _serve(
        loop,
        DeadlineProtocol,
        inner,
        GET,
        b"GET /v1/things/1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: till-7\r\n\r\n",
    )
    answers = written.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2
    made = [line for line in answers[0].split(b"\r\n") if line.startswith(b"x-request-id: ")]
    assert len(made) == 1 and len(made[0]) == len(b"x-request-id: ") + 32
    assert answers[1].count(b"x-request-id") == 1 and b"x-request-id: till-7\r\n\r\n{}" in answers[1]
    assert inner.sends_were_the_servers == [True, True]
    assert _counts(metrics) == {(ROUTE, "GET", 201): 2}


def test_under_another_server_the_id_goes_through_send(loop: asyncio.AbstractEventLoop) -> None:
    inner = Inner(404)
    written, metrics = _serve(loop, HttpToolsProtocol, inner, GET)
    assert written.startswith(b"HTTP/1.1 404 ")
    assert written.count(b"x-request-id: ") == 1
    assert inner.sends_were_the_servers == [False]
    assert _counts(metrics) == {(ROUTE, "GET", 404): 1}


def test_a_continue_answer_leaves_the_id_to_the_final_head(loop: asyncio.AbstractEventLoop) -> None:
    post = b"POST /v1/things HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    connection = Connection(loop, DeadlineProtocol, Inner(422))
    connection.receive(post)
    connection.receive(b"{}")
    connection.lose()
    written, metrics = connection.written, connection.metrics
    interim, final = written.split(b"HTTP/1.1 422 ")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.count(b"x-request-id: ") == 1
    assert _counts(metrics) == {(ROUTE, "POST", 422): 1}


def test_an_application_that_fails_before_answering_is_counted_500_and_its_500_names_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    inner = Inner(200, fail=True)
    written, metrics = _serve(loop, DeadlineProtocol, inner, GET)
    assert written.startswith(b"HTTP/1.1 500 ")
    assert written.count(b"x-request-id: ") == 1
    assert _counts(metrics) == {(ROUTE, "GET", 500): 1}


def _held(loop: asyncio.AbstractEventLoop) -> tuple[Connection, asyncio.Event]:
    """A connection whose GET waits to be answered until the event is set."""
    inner = Inner(200)
    inner.gate = asyncio.Event()
    connection = Connection(loop, DeadlineProtocol, inner)
    connection.receive(GET, turns=1)
    return connection, inner.gate


def test_pipelined_requests_each_count_their_own_status_though_the_first_ran_on_after_answering(
    loop: asyncio.AbstractEventLoop,
) -> None:
    inner = Inner(200, after=3)
    both = b"GET /v1/things/201 HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/things/404 HTTP/1.1\r\nHost: x\r\n\r\n"
    written, metrics = _serve(loop, DeadlineProtocol, inner, both)
    first, second = written.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"201 ") and second.startswith(b"404 ")
    assert first.count(b"x-request-id: ") == 1 and second.count(b"x-request-id: ") == 1
    assert _counts(metrics) == {(ROUTE, "GET", 201): 1, (ROUTE, "GET", 404): 1}


def test_the_servers_own_400_keeps_its_bytes_and_takes_no_id_from_the_request_still_running(
    loop: asyncio.AbstractEventLoop,
) -> None:
    connection, gate = _held(loop)
    connection.receive(b"\x00garbage\r\n\r\n", turns=3)  # while the first request waits to answer
    connection.lose()
    gate.set()
    connection.turn()
    written, metrics = connection.written, connection.metrics
    assert written.startswith(b"HTTP/1.1 400 ")
    head, body = written.split(b"\r\n\r\n", 1)
    assert b"x-request-id" not in written
    assert int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) == len(body)
    assert _counts(metrics) == {(ROUTE, "GET", 499): 1}  # its connection closed before it answered


def test_a_request_whose_client_went_away_before_its_answer_is_counted_499(
    loop: asyncio.AbstractEventLoop,
) -> None:
    connection, gate = _held(loop)
    connection.lose()
    gate.set()
    connection.turn()
    assert connection.written == b""
    assert _counts(connection.metrics) == {(ROUTE, "GET", 499): 1}
