"""An adapter sends a target's credentials only to that target (issue #11, item 8): a URL taken from a
payload is followed only under the configured base URL, a redirect is not followed, and whatever is
refused is logged masked and sends nothing anywhere."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.db import transaction
from adapters.http import ForeignUrl, HttpClient, under_base
from adapters.httpserver import HttpServer, Reply, Request
from adapters.inbound import InboxWorker, WebhookAccess, WebhookReceiver
from adapters.moysklad import MoySkladClient, MoySkladConfig
from adapters.moysklad_demands import DemandSync
from adapters.sink import LedgerSink
from adapters.webhook_server import WebhookServer

BASE = "https://api.moysklad.ru/api/remap/1.2"
SECRET = "ms-hook-0d9e8f7a"
TOKEN = "moysklad-token-3c4d5e6f"


@dataclasses.dataclass
class Recording:
    """A server of someone else's: it answers 200 to anything and keeps what it was sent."""

    requests: list[Request] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
        return Reply(200, {"id": "d-1", "store": {"meta": {"href": "x/store/y"}}, "positions": []})


@pytest.fixture
def elsewhere() -> Iterator[tuple[Recording, HttpServer]]:
    recording = Recording()
    server = HttpServer(recording).start()
    try:
        yield recording, server
    finally:
        server.stop()


def client_for(server: HttpServer) -> MoySkladClient:
    return MoySkladClient(MoySkladConfig(base_url=server.url + "/api/remap/1.2", token=TOKEN, timeout_s=2.0))


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}/entity/demand/1",
        f"{BASE}/entity/demand/1?expand=positions",
        "HTTPS://API.MOYSKLAD.RU:443/api/remap/1.2/entity/demand/1",
        f"{BASE}/",
        BASE,
    ],
)
def test_a_url_under_the_base_url_may_be_followed(url: str) -> None:
    assert under_base(BASE, url)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.moysklad.ru/api/remap/1.2/entity/demand/1",  # another scheme
        "https://api.moysklad.ru.evil.example/api/remap/1.2/entity/demand/1",  # another host
        "https://evil.example/api/remap/1.2/entity/demand/1",
        "https://api.moysklad.ru:8443/api/remap/1.2/entity/demand/1",  # another port
        "https://api.moysklad.ru/api/remap/1.3/entity/demand/1",  # another path
        "https://api.moysklad.ru/api/remap/1.2evil/entity/demand/1",
        "https://api.moysklad.ru/api/remap/1.2/../../admin",  # out of the prefix by dot segments
        "https://api.moysklad.ru/api/remap/1.2/%2e%2e/%2E%2E/admin",
        "https://api.moysklad.ru/api/remap/1.2/..%2f..%2fadmin",
        "https://api.moysklad.ru/api/remap/1.2/..\\..\\admin",
        "https://user:pass@api.moysklad.ru/api/remap/1.2/entity/demand/1",  # user info
        "https://api.moysklad.ru@evil.example/api/remap/1.2/entity/demand/1",
        "https://api.moysklad.ru/api/remap/1.2/entity/demand/1 HTTP/1.1\r\nX: y",
        "https://api.moysklad.ru:notaport/api/remap/1.2/",
        "file:///etc/passwd",
        "//evil.example/api/remap/1.2/entity/demand/1",
    ],
)
def test_any_other_url_is_refused(url: str) -> None:
    assert not under_base(BASE, url)


def test_a_forged_demand_webhook_cannot_make_the_adapter_send_its_token_elsewhere(
    moysklad: Any, elsewhere: tuple[Recording, HttpServer], recorder: Any, mappings: Any, ledger: Any, caplog
) -> None:
    fake, server = moysklad
    fake.token = TOKEN
    recording, other = elsewhere
    forged = {
        "events": [
            {
                "meta": {"type": "demand", "href": f"{other.url}/api/remap/1.2/entity/demand/d-1"},
                "action": "CREATE",
            }
        ]
    }
    receiver = WebhookServer(WebhookReceiver(recorder, WebhookAccess(moysklad_secret=SECRET))).start()
    try:
        answer = httpx.post(
            f"{receiver.url}/moysklad/webhook/{SECRET}?requestId=forged-1",
            content=json.dumps(forged),
            timeout=5,
        )
    finally:
        receiver.stop()
    assert answer.status_code == 200  # stored: the path's secret was right
    demands = DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger))
    inbox = InboxWorker(recorder, {"moysklad": demands.handle})
    caplog.set_level(logging.INFO)

    outcome = inbox.run_once()

    assert [request.header("Authorization") for request in recording.requests] == []
    assert outcome == (1, 0)  # given up at once: no retry can make it safe
    with transaction(recorder) as tx:
        row = tx.fetchone("SELECT processed_at, attempts, last_error FROM adapter_inbox")
        alert = tx.fetchone("SELECT detail FROM adapter_journal WHERE kind = 'alert'")
    assert row is not None and row["processed_at"] is not None and row["attempts"] == 1
    assert "refused to send a request to" in row["last_error"]
    assert alert is not None and "refused" in alert["detail"]
    assert "refused to send a request to " + other.url in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/remap/1.3/entity/demand/d-1",  # the same server, outside the configured API
        "/api/remap/1.2/../../steal",
        "/api/remap/1.2/entity/demand/%2e%2e/%2e%2e/%2e%2e/steal",
    ],
)
def test_an_href_to_the_same_server_outside_the_base_path_sends_nothing(
    moysklad: Any, recorder: Any, mappings: Any, path: str
) -> None:
    fake, server = moysklad
    fake.token = TOKEN
    forged = {"events": [{"meta": {"type": "demand", "href": server.url + path}, "action": "CREATE"}]}
    requests_before = fake.requests

    with pytest.raises(ForeignUrl):
        DemandSync(recorder, mappings, client_for(server), sink=None).handle(forged)  # type: ignore[arg-type]

    assert fake.requests == requests_before


def test_a_redirect_is_not_followed_with_the_credentials(
    moysklad: Any, elsewhere: tuple[Recording, HttpServer]
) -> None:
    fake, server = moysklad
    fake.token = TOKEN
    recording, other = elsewhere
    fake.next_replies.append(Reply(302, None, headers={"Location": f"{other.url}/steal"}))

    answer = client_for(server).request("GET", "entity/customerorder")

    assert answer.status == 302
    assert recording.requests == []


def test_a_client_refuses_before_it_connects(elsewhere: tuple[Recording, HttpServer]) -> None:
    recording, other = elsewhere
    client = HttpClient(BASE, 2.0, {"X-API-Key": "key"})

    with pytest.raises(ForeignUrl):
        client.request("GET", f"{other.url}/api/remap/1.2/entity/demand/1")

    assert recording.requests == []
