"""The writer process's server, without a database: what it does with what a client sends."""

from __future__ import annotations

import selectors
import socket
from types import SimpleNamespace
from typing import Any

from ledger.writer.server import QUEUE_FULL, WriterServer, _Client, _Request
from ledger.writer.wire import WriteRequest, encode


def _server(queue_max: int, outbox_bytes_max: int = 1 << 20) -> WriterServer:
    writer: Any = SimpleNamespace(
        limits=SimpleNamespace(queue_submissions_max=queue_max, slow_batch_s=1.0), on_commit=None
    )
    return WriterServer(
        writer, "/nonexistent", batch_events_max=10, outbox_bytes_max=outbox_bytes_max, parent_pid=None
    )


def test_requests_beyond_the_queue_bound_are_refused_at_once() -> None:
    server = _server(queue_max=2)
    ours, theirs = socket.socketpair()
    try:
        client = _Client(ours, "client 1")
        server.clients[ours] = client
        theirs.sendall(b"".join(encode(WriteRequest(request_id, [])) for request_id in (1, 2, 3)))
        pending: list[_Request] = []
        server._read(client, pending)
        assert [request.request_id for request in pending] == [1, 2]
        assert [(reply.request_id, reply.results, reply.error) for reply in client.replies] == [
            (3, None, QUEUE_FULL)
        ]
    finally:
        ours.close()
        theirs.close()
        server.close()


def _connected(server: WriterServer) -> tuple[_Client, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client = _Client(ours, "client 1")
    server.clients[ours] = client
    server.selector.register(ours, selectors.EVENT_READ, client)
    return client, theirs


def test_a_client_that_reads_is_kept_though_one_message_is_over_the_outbox_limit() -> None:
    """The commit of a batch of a million levels is one message of tens of megabytes, over the
    32 MiB limit: every HTTP worker reading it was disconnected, its callers answered 503."""
    server = _server(queue_max=2, outbox_bytes_max=4096)
    client, theirs = _connected(server)
    message = bytes(range(256)) * 4096  # 1 MiB, 256 times the limit
    received = bytearray()
    try:
        server._queue(client, message)
        theirs.settimeout(5)
        while len(received) < len(message):
            assert client.sock in server.clients, "disconnected while it read"
            received += theirs.recv(1 << 16)
            server._send(client)
        assert received == message
        assert server.clients_dropped == 0
    finally:
        client.sock.close()
        theirs.close()
        server.close()


def test_a_client_that_stops_reading_is_disconnected_once_messages_pile_up_behind() -> None:
    server = _server(queue_max=2, outbox_bytes_max=4096)
    client, theirs = _connected(server)
    try:
        server._queue(client, b"x" * (1 << 20))  # more than its socket takes: it waits
        assert client.sock in server.clients
        server._queue(client, b"y" * 5000)  # behind it, over the limit
        assert client.sock not in server.clients
        assert server.clients_dropped == 1
    finally:
        client.sock.close()
        theirs.close()
        server.close()
