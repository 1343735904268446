"""The writer process's server, without a database: what it does with what a client sends."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

from ledger.writer.server import QUEUE_FULL, WriterServer, _Client, _Request
from ledger.writer.wire import WriteRequest, encode


def _server(queue_max: int) -> WriterServer:
    writer: Any = SimpleNamespace(
        limits=SimpleNamespace(queue_submissions_max=queue_max, slow_batch_s=1.0), on_commit=None
    )
    return WriterServer(
        writer, "/nonexistent", batch_events_max=10, outbox_bytes_max=1 << 20, parent_pid=None
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
