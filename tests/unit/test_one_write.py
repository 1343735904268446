"""A response leaves in one write (ledger/api/one_write.py): the server's writes of one turn of the
event loop reach the real transport joined, in order, and nothing kept is lost at a close."""

from __future__ import annotations

import asyncio
from typing import Any

from support.transports import CountedTransport
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ledger.api.connections import DeadlineProtocol
from ledger.api.one_write import KEPT_BYTES_MAX, OneWriteTransport


def _turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def test_the_writes_of_one_turn_reach_the_transport_as_one(loop: asyncio.AbstractEventLoop) -> None:
    real = CountedTransport()
    transport = OneWriteTransport(real, loop)
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(bytearray(b"body"))
    assert real.calls == [] and transport.get_write_buffer_size() == 23
    _turn(loop)
    assert real.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
    transport.write(b"next")
    _turn(loop)
    assert real.calls[1:] == [("write", b"next")]


def test_a_close_writes_what_is_kept_first(loop: asyncio.AbstractEventLoop) -> None:
    real = CountedTransport()
    transport = OneWriteTransport(real, loop)
    transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    transport.close()
    _turn(loop)  # the turn's own flush finds nothing left
    assert real.calls == [("write", b"HTTP/1.1 400 Bad Request\r\n\r\n"), ("close", b"")]


def test_nothing_is_written_to_a_transport_that_closed_meanwhile(loop: asyncio.AbstractEventLoop) -> None:
    real = CountedTransport()
    transport = OneWriteTransport(real, loop)
    transport.write(b"answer")
    real.closing = True  # the peer went away before the turn ended
    _turn(loop)
    assert real.calls == []
    transport.write(b"more")
    transport.abort()
    _turn(loop)
    assert real.calls == [("abort", b"")]


def test_a_large_body_goes_to_the_transport_at_once(loop: asyncio.AbstractEventLoop) -> None:
    """So that the real transport's flow control sees it, as it would without this transport."""
    real = CountedTransport()
    transport = OneWriteTransport(real, loop)
    transport.write(b"headers\r\n\r\n")
    body = b"x" * KEPT_BYTES_MAX
    transport.write(body)
    assert real.calls == [("write", b"headers\r\n\r\n" + body)]
    assert transport.get_write_buffer_size() == 0
    _turn(loop)
    assert len(real.calls) == 1


def test_an_end_of_writing_writes_what_is_kept_first(loop: asyncio.AbstractEventLoop) -> None:
    real = CountedTransport()
    transport = OneWriteTransport(real, loop)
    transport.write(b"last")
    real.write_eof = lambda: real.calls.append(("eof", b""))  # type: ignore[method-assign]
    transport.write_eof()
    assert real.calls == [("write", b"last"), ("eof", b"")]


def test_an_answer_kept_when_the_peer_ends_its_side_is_written(loop: asyncio.AbstractEventLoop) -> None:
    """The real transport closes itself right after eof_received and drops later writes: the
    protocol hands it what is kept first."""
    config = Config(_answer, access_log=False, log_config=None)
    config.load()
    protocol = DeadlineProtocol(
        config, ServerState(), {}, loop, header_timeout_s=10.0, body_timeout_s=10.0, header_bytes_max=8192
    )
    real = CountedTransport()
    protocol.connection_made(real)
    protocol.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    protocol.eof_received()
    assert real.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")]
    protocol.connection_lost(None)
    _turn(loop)


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"on_hand":5}'})


def _served(loop: asyncio.AbstractEventLoop, protocol_class: Any, **limits: Any) -> CountedTransport:
    config = Config(_answer, access_log=False, log_config=None, date_header=False, server_header=False)
    config.load()
    protocol = protocol_class(config, ServerState(), {}, loop, **limits)
    real = CountedTransport()
    protocol.connection_made(real)
    protocol.data_received(b"GET /v1/stores/s/stock/A HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(5):
        _turn(loop)
    protocol.connection_lost(None)
    _turn(loop)
    return real


def test_a_response_of_the_ledgers_server_leaves_in_one_write(loop: asyncio.AbstractEventLoop) -> None:
    """uvicorn's own protocol writes the status line and headers, then the body; the ledger's
    protocol writes the same bytes once."""
    uvicorns = _served(loop, HttpToolsProtocol)
    ledgers = _served(
        loop, DeadlineProtocol, header_timeout_s=10.0, body_timeout_s=10.0, header_bytes_max=8192
    )
    uvicorns_writes = [data for kind, data in uvicorns.calls if kind == "write"]
    ledgers_writes = [data for kind, data in ledgers.calls if kind == "write"]
    assert len(uvicorns_writes) == 2
    assert ledgers_writes == [b"".join(uvicorns_writes)]
    assert [kind for kind, _ in ledgers.calls] == [kind for kind, _ in uvicorns.calls][1:]
    assert ledgers_writes[0].endswith(b'\r\n\r\n{"on_hand":5}')
