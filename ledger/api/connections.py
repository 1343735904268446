"""The HTTP server's own limits on connections, for when no proxy stands in front of it.

uvicorn closes an idle keep-alive connection only after a response (a connection that never sends a
request stays open), and has no deadline for a request that arrives slowly (slowloris: headers or a
body trickling in a byte at a time). `DeadlineProtocol` is uvicorn's httptools protocol with both:
- idle: a new connection must start a request within the idle timeout, as a kept-alive one must;
- headers: a request's headers must arrive whole, and within `header_bytes_max`, in the header
  timeout from its first byte; its body must arrive whole in the body timeout from its headers.
Past a deadline the connection is closed (a reader of the request sees a disconnect); headers over
the size answer 400 and close. And a write deadline: an answer the client stops reading, once the
connection's send buffer is full, must drain within the write timeout, else the connection is cut.
A deadline is a time kept on the connection, not a timer: one sweep
per worker looks its connections over every DEADLINE_SWEEP_S while any has one, so a connection is
closed at most that long after its deadline. (A timer per deadline cost every request two timers
made and cancelled, 5.8 µs measured, for deadlines that almost never pass.)
`uvicorn_options` gives uvicorn these and its own limits explicitly.
Its writes go through `OneWriteTransport` (one_write.py), so that a response leaves in one write,
and each request's scope holds that connection's `ResponseHead` (response_head.py).

Past `LEDGER_HTTP_CONNECTIONS_MAX` connections (or requests in flight) a worker answers a request
503 and closes its connection, as uvicorn's `limit_concurrency` does, but through the whole stack:
the protocol marks the request (`OVER_CAPACITY_KEY`) and the edge's first check answers it
(gate.py; liveness and the metrics are answered still). So the answer is the problem every other
503 is, with Retry-After, carries its request id, and is counted and logged like any other;
uvicorn's own was plain text, with neither.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ledger.api.gate import OVER_CAPACITY_KEY
from ledger.api.one_write import OneWriteTransport
from ledger.api.response_head import RESPONSE_HEAD_KEY
from ledger.config import Settings

# How often a worker's connections are looked over for a read or write deadline that has passed.
DEADLINE_SWEEP_S = 0.25
WRITE_TIMEOUT_S_DEFAULT = 30.0  # LEDGER_HTTP_WRITE_TIMEOUT_S


class _DeadlineSweep:
    """Closes the connections of one server (uvicorn's set of them) whose read deadline has passed,
    looking them over every DEADLINE_SWEEP_S while any of them has a deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.next: asyncio.TimerHandle | None = None

    def ensure(self) -> None:
        if self.next is None:
            self.next = self.loop.call_later(DEADLINE_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self.next = None
        now = self.loop.time()
        waiting = False
        try:
            for connection in list(self.connections):
                read_by = getattr(connection, "read_by", 0.0)  # another protocol has none
                if read_by:
                    if read_by <= now:
                        connection.read_deadline_passed()
                    else:
                        waiting = True
                write_by = getattr(connection, "write_by", 0.0)
                if write_by:
                    if write_by <= now:
                        connection.write_deadline_passed()
                    else:
                        waiting = True
        except BaseException:
            self.ensure()  # the connections not looked at yet keep their deadlines
            raise
        if waiting:
            self.ensure()


# One sweep per server (its state object, shared by its connections).
_sweeps: weakref.WeakKeyDictionary[ServerState, _DeadlineSweep] = weakref.WeakKeyDictionary()


class HeadersTooLarge(Exception):
    """Raised inside the parser's callback: httptools turns it into a parse error (400, close)."""


class DeadlineProtocol(HttpToolsProtocol):
    # Over capacity, a request is marked for the stack to answer (the API's EdgeGate, the adapters'
    # webhook app); False: uvicorn answers it itself, plain text, for an application that does not.
    capacity_in_stack = True

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout_s: float,
        body_timeout_s: float,
        header_bytes_max: int,
        write_timeout_s: float = WRITE_TIMEOUT_S_DEFAULT,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own check answers with an application of its own, outside the stack: ours
        # (on_headers_complete) marks the request instead, and the stack answers it.
        self.capacity: int | None = None
        if self.capacity_in_stack:
            self.capacity, self.limit_concurrency = self.limit_concurrency, None
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.header_bytes_max = header_bytes_max
        self.header_bytes = 0
        self.read_by = 0.0  # the loop's time by which the request must have arrived (0: none)
        self.write_timeout_s = write_timeout_s
        self.write_by = 0.0  # the loop's time by which a full send buffer must have drained (0: none)
        sweep = _sweeps.get(server_state)
        if sweep is None:
            sweep = _sweeps[server_state] = _DeadlineSweep(self.loop, self.connections)
        self.deadline_sweep = sweep

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.one_write = OneWriteTransport(transport, self.loop)
        super().connection_made(self.one_write)
        # The same timer uvicorn starts after each response; the first byte received cancels it.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def eof_received(self) -> None:
        # The peer ended its side: the real transport closes itself once this returns and drops
        # what is written after, so an answer still kept goes to it first.
        self.one_write.flush()
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        self.one_write.response_head.closed = True
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn writes this answer to a malformed request itself, head and body at once, maybe
        # while the request before it is still being answered: it carries no id, and takes none.
        # Its own is plain text; every error the API answers is a problem (CONTRACT §3).
        self.one_write.response_head.pending = None
        if self.header_bytes > self.header_bytes_max:
            msg = f"request headers over {self.header_bytes_max} bytes"
        body = orjson.dumps(
            {"type": "invalid-request", "title": "Invalid HTTP request", "status": 400, "detail": msg}
        )
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[RESPONSE_HEAD_KEY] = self.one_write.response_head  # type: ignore[literal-required]
        self.header_bytes = 0
        self._set_read_deadline(self.header_timeout_s)

    # The parser calls these two for every request and every header in it: each is one Python frame,
    # not three (an override, the count, uvicorn's own), which was measurable per header (a bearer
    # token is one more). So they do uvicorn's work themselves (uvicorn 0.55, httptools_impl.py);
    # tests/unit/test_connection_headers.py holds them to what uvicorn's make of the same requests.

    def on_url(self, url: bytes) -> None:
        self.header_bytes += len(url)
        if self.header_bytes > self.header_bytes_max:
            raise HeadersTooLarge(f"request headers over {self.header_bytes_max} bytes")
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > self.header_bytes_max:
            raise HeadersTooLarge(f"request headers over {self.header_bytes_max} bytes")
        name = name.lower()
        # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from the value.
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._set_read_deadline(self.body_timeout_s)
        capacity = self.capacity
        if capacity is not None and (len(self.connections) >= capacity or len(self.tasks) >= capacity):
            self.scope[OVER_CAPACITY_KEY] = True  # type: ignore[literal-required]
            self.logger.warning("Exceeded concurrency limit.")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_read_deadline()
        super().on_message_complete()

    def _set_read_deadline(self, timeout_s: float) -> None:
        self.read_by = self.loop.time() + timeout_s
        self.deadline_sweep.ensure()

    def _cancel_read_deadline(self) -> None:
        self.read_by = 0.0

    def read_deadline_passed(self) -> None:
        self.read_by = 0.0
        if not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self) -> None:
        """The send buffer is full: the client must read it within the write timeout."""
        super().pause_writing()
        self.write_by = self.loop.time() + self.write_timeout_s
        self.deadline_sweep.ensure()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_by = 0.0

    def write_deadline_passed(self) -> None:
        """Cut, not closed: a close would wait for the client to read what is buffered."""
        self.write_by = 0.0
        self.logger.info("a client read none of its answer for %s s: connection cut", self.write_timeout_s)
        self.one_write.abort()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's connection limits for the API, explicitly."""
    return connection_options(
        DeadlineProtocol,
        idle_timeout_s=settings.http_idle_timeout_s,
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        header_bytes_max=settings.http_header_bytes_max,
        connections_max=settings.http_connections_max,
        write_timeout_s=settings.http_write_timeout_s,
    )


def connection_options(
    protocol: type[DeadlineProtocol],
    *,
    idle_timeout_s: float,
    header_timeout_s: float,
    body_timeout_s: float,
    header_bytes_max: int,
    connections_max: int,
    write_timeout_s: float = WRITE_TIMEOUT_S_DEFAULT,
) -> dict[str, Any]:
    """uvicorn's options for `protocol` (DeadlineProtocol or a subclass) and its limits; the
    protocol is picklable for `--workers N`."""
    return {
        "http": functools.partial(
            protocol,
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            header_bytes_max=header_bytes_max,
            write_timeout_s=write_timeout_s,
        ),
        "timeout_keep_alive": idle_timeout_s,
        "limit_concurrency": connections_max,
        # Used only by the h11 protocol; the same limit as ours, should h11 ever be chosen.
        "h11_max_incomplete_event_size": header_bytes_max,
    }
