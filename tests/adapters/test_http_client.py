"""The adapters' HTTP client (adapters/http.py): an adapter's requests to one target go over a kept
connection, not one each, and stopping the adapters closes it; a gzip answer is read decompressed,
and no answer is read past RESPONSE_BYTES_MAX, compressed or not."""

from __future__ import annotations

import gzip
import threading
from typing import Any

import pytest

from adapters import http
from adapters.http import TransportError
from adapters.httpserver import HttpServer, Reply
from adapters.moysklad import MoySkladClient, MoySkladConfig

TOKEN = "moysklad-token-7a8b9c0d"
REQUESTS = 5


def client_for(server: HttpServer) -> MoySkladClient:
    return MoySkladClient(MoySkladConfig(base_url=server.url + "/api/remap/1.2", token=TOKEN, timeout_s=5.0))


def count_connections(server: HttpServer) -> list[Any]:
    """The addresses of the connections the server accepts from now on, one entry per connection."""
    accepted: list[Any] = []
    lock = threading.Lock()
    accept = server.httpd.get_request

    def counted() -> Any:
        connection = accept()
        with lock:
            accepted.append(connection[1])
        return connection

    server.httpd.get_request = counted  # type: ignore[method-assign]
    return accepted


def test_requests_to_one_target_share_one_connection(moysklad: Any) -> None:
    fake, server = moysklad
    fake.token = TOKEN
    accepted = count_connections(server)
    client = client_for(server)
    try:
        answers = [client.request("GET", "entity/customerorder").status for _ in range(REQUESTS)]
    finally:
        client.http.close()

    assert answers == [200] * REQUESTS
    assert len(accepted) == 1, f"{len(accepted)} connections for {REQUESTS} requests"


def test_a_closed_client_sends_nothing_and_says_so(moysklad: Any) -> None:
    fake, server = moysklad
    fake.token = TOKEN
    client = client_for(server)
    assert client.http.request("GET", "entity/customerorder").status == 200
    accepted = count_connections(server)

    client.http.close()

    with pytest.raises(TransportError, match="closed"):
        client.http.request("GET", "entity/customerorder")
    assert accepted == []


def test_a_gzip_answer_is_read_decompressed(moysklad: Any) -> None:
    fake, server = moysklad
    fake.token = TOKEN
    fake.next_replies.append(Reply(200, gzip.compress(b'{"rows": [1, 2, 3]}'), {"Content-Encoding": "gzip"}))
    client = client_for(server)
    try:
        answer = client.request("GET", "entity/customerorder")
    finally:
        client.http.close()

    assert answer.json() == {"rows": [1, 2, 3]}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_an_answer_is_read_no_further_than_its_limit(
    moysklad: Any, monkeypatch: pytest.MonkeyPatch, compressed: bool
) -> None:
    """A gzip answer is cut once decompressed: a small compressed body cannot fill the memory."""
    fake, server = moysklad
    fake.token = TOKEN
    monkeypatch.setattr(http, "RESPONSE_BYTES_MAX", 1000)
    body = b"x" * 200_000
    fake.next_replies.append(
        Reply(200, gzip.compress(body), {"Content-Encoding": "gzip"}) if compressed else Reply(200, body)
    )
    client = client_for(server)
    try:
        answer = client.request("GET", "entity/customerorder")
    finally:
        client.http.close()

    assert answer.status == 200
    assert answer.body == b"x" * 1000
