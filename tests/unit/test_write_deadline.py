"""A client that asks for an answer and never reads it: once the connection's send buffer is full,
the answer must drain within the write timeout, else the connection is cut, its request's task
ends and it stops counting against the connections' maximum (ledger/api/connections.py)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from ledger.api.connections import DeadlineProtocol, connection_options

WRITE_TIMEOUT_S = 1.0
CLIENTS = 4
BODY = b"x" * (4 * 1024 * 1024)  # past the kernel's buffers on both ends of a loopback connection
WAIT_S = 20.0


class _Protocol(DeadlineProtocol):
    capacity_in_stack = False  # no EdgeGate in front of this app: uvicorn answers over capacity


def test_an_answer_nobody_reads_is_cut_after_the_write_timeout() -> None:
    finished = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = BODY if scope["path"] == "/big" else b"ok"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        finished.append(scope["path"])

    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    options = connection_options(
        _Protocol,
        idle_timeout_s=60,
        header_timeout_s=60,
        body_timeout_s=60,
        header_bytes_max=8192,
        connections_max=CLIENTS + 1,
        write_timeout_s=WRITE_TIMEOUT_S,
    )
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", **options))
    serving = threading.Thread(target=server.run, args=([listening],), daemon=True)
    serving.start()
    clients = []
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(CLIENTS):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", port))
            client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            clients.append(client)  # never read
        while server.server_state.connections or len(finished) < CLIENTS:
            assert time.monotonic() < deadline, (
                f"{len(server.server_state.connections)} connections still held, "
                f"{len(finished)} answers ended"
            )
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
            probe.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            assert probe.recv(200).startswith(b"HTTP/1.1 200 ")
    finally:
        for client in clients:
            client.close()
        server.should_exit = True
        serving.join(WAIT_S)
