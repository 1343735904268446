"""The adapters' HTTP client bounds a whole answer, not only each read: a target that trickles its
body, each byte inside the read timeout, must not hold a worker for as long as it likes."""

from __future__ import annotations

import socket
import threading

import pytest

from adapters.http import HttpClient, TransportError

TIMEOUT_S = 0.5
BYTE_EVERY_S = 0.1  # well inside each read's timeout
BODY_BYTES = 1000  # 100 s at that pace


def _trickling_server(stop: threading.Event) -> int:
    listening = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listening.accept()
        with connection, listening:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY_BYTES)
            for _ in range(BODY_BYTES):
                if stop.wait(BYTE_EVERY_S):
                    return
                try:
                    connection.sendall(b"x")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return int(listening.getsockname()[1])


def test_an_answer_that_trickles_in_is_given_up_whole() -> None:
    stop = threading.Event()
    port = _trickling_server(stop)
    client = HttpClient(f"http://127.0.0.1:{port}/", TIMEOUT_S)
    try:  # whole, the body would take BODY_BYTES * BYTE_EVERY_S: 100 s
        with pytest.raises(TransportError, match="did not arrive in time"):
            client.request("GET", "stock")
    finally:
        stop.set()
        client.close()
