"""DeadlineProtocol (ledger/api/connections.py) reads a request's URL and headers itself, in place of
uvicorn's callbacks: what it makes of a request must be what uvicorn's own protocol makes of it, and
its header size limit must hold. Both protocols are fed the same bytes, without a socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ledger.api.connections import DeadlineProtocol

HEADER_BYTES_MAX = 1024


class KeptTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _no_answer(scope: Any, receive: Any, send: Any) -> None:
    return None


def _fed(loop: asyncio.AbstractEventLoop, protocol_class: Any, *chunks: bytes, **limits: Any) -> Any:
    config = Config(_no_answer, access_log=False, log_config=None)
    config.load()
    protocol = protocol_class(config, ServerState(), {}, loop, **limits)
    transport = KeptTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
    protocol.kept_transport = transport
    for task in protocol.tasks:
        task.cancel()
    protocol.connection_lost(None)
    loop.run_until_complete(asyncio.sleep(0))
    return protocol


def _deadline(loop: asyncio.AbstractEventLoop, *chunks: bytes) -> Any:
    return _fed(
        loop,
        DeadlineProtocol,
        *chunks,
        header_timeout_s=10.0,
        body_timeout_s=10.0,
        header_bytes_max=HEADER_BYTES_MAX,
    )


REQUESTS = [
    b"GET /v1/stores/s-1/stock/A?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    b"GET /v1/a%20b HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer sl_live_abc  \t\r\n"
    b"X-Request-ID: Mixed-Case\r\nAccept: */*\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHOST: h\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nExpect: 100-Continue\r\n\r\n[]",
]


@pytest.mark.parametrize("request_bytes", REQUESTS)
def test_a_request_reads_as_uvicorn_reads_it(loop: asyncio.AbstractEventLoop, request_bytes: bytes) -> None:
    ours = _deadline(loop, request_bytes)
    uvicorns = _fed(loop, HttpToolsProtocol, request_bytes)
    for key in ("method", "path", "raw_path", "query_string", "headers"):
        assert ours.scope[key] == uvicorns.scope[key], key
    assert ours.url == uvicorns.url
    assert ours.expect_100_continue == uvicorns.expect_100_continue


def test_a_request_in_pieces_reads_as_uvicorn_reads_it(loop: asyncio.AbstractEventLoop) -> None:
    request_bytes = REQUESTS[1]
    pieces = [request_bytes[i : i + 7] for i in range(0, len(request_bytes), 7)]
    ours = _deadline(loop, *pieces)
    uvicorns = _fed(loop, HttpToolsProtocol, *pieces)
    assert ours.scope["headers"] == uvicorns.scope["headers"]
    assert ours.url == uvicorns.url


def test_headers_over_the_limit_answer_400_however_they_arrive(loop: asyncio.AbstractEventLoop) -> None:
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * HEADER_BYTES_MAX + b"\r\n\r\n"
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"b" * 30) for n in range(40)) + b"\r\n"
    long_url = b"GET /" + b"u" * HEADER_BYTES_MAX + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    for request_bytes in (big, many, long_url):
        for chunks in (
            [request_bytes],
            [request_bytes[i : i + 100] for i in range(0, len(request_bytes), 100)],
        ):
            protocol = _deadline(loop, *chunks)
            assert protocol.kept_transport.written.startswith(b"HTTP/1.1 400"), request_bytes[:40]
            assert protocol.kept_transport.closed


def test_headers_just_within_the_limit_are_read(loop: asyncio.AbstractEventLoop) -> None:
    # The limit counts the URL, and each header's name and value.
    url = b"/"
    value = b"v" * (HEADER_BYTES_MAX - len(url) - len(b"host") - len(b"h") - len(b"x-fill"))
    request_bytes = b"GET " + url + b" HTTP/1.1\r\nHost: h\r\nX-Fill: " + value + b"\r\n\r\n"
    protocol = _deadline(loop, request_bytes)
    assert not protocol.kept_transport.written.startswith(b"HTTP/1.1 400")
    assert protocol.scope["headers"][-1] == (b"x-fill", value)
    over = _deadline(loop, request_bytes.replace(b"X-Fill: ", b"X-Fill: v"))
    assert over.kept_transport.written.startswith(b"HTTP/1.1 400")


def _problem(written: bytes) -> dict[str, Any]:
    head, _, body = written.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers[b"connection"] == b"close"
    return dict(json.loads(body))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost h\r\n\r\n",  # a header line without its colon
        b"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",  # no method
        b"GET / HTTP/9.9\r\nHost: h\r\n\r\n",  # no version
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",  # two lengths
    ],
)
def test_a_request_the_parser_refuses_is_answered_with_a_problem(
    loop: asyncio.AbstractEventLoop, request_bytes: bytes
) -> None:
    """CONTRACT §3: every error is problem+json, the parser's own 400 too (uvicorn's is plain text)."""
    protocol = _deadline(loop, request_bytes)
    problem = _problem(protocol.kept_transport.written)
    assert problem == {
        "type": "invalid-request",
        "title": "Invalid HTTP request",
        "status": 400,
        "detail": "Invalid HTTP request received.",
    }
    assert protocol.kept_transport.closed


def test_headers_over_the_limit_are_named_in_the_problem(loop: asyncio.AbstractEventLoop) -> None:
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * HEADER_BYTES_MAX + b"\r\n\r\n"
    problem = _problem(_deadline(loop, big).kept_transport.written)
    assert problem["detail"] == f"request headers over {HEADER_BYTES_MAX} bytes"
