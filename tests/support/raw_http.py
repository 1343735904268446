"""One request sent as raw bytes, and its answer read until the server closes: for what an HTTP
client library will not send (no Host line, two of them, HTTP/1.0)."""

from __future__ import annotations

import socket


def raw_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and body of the answer to one raw request to
    127.0.0.1:`port`; the request should ask for `Connection: close`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
    }
    return int(status_line.split()[1]), headers, body
