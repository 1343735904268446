"""Who may reach the adapters' HTTP side (issue #11, item 8): each webhook by its own secret (a path,
or an HMAC signature for the WMS), never by a ledger token; /metrics by a ledger token with
LEDGER_METRICS_AUTH=required; and only under the Host names LEDGER_ALLOWED_HOSTS lists."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.access import bearer, new_token
from support.raw_http import raw_answer

from adapters.inbound import WebhookAccess, WebhookReceiver
from adapters.runner import Runner, build_adapters
from adapters.signatures import SignatureScheme
from adapters.webhook_server import WebhookServer
from devtools.fakes.wms import send_status
from ledger.access.book import NO_TOKEN, NOT_VALID
from ledger.config import Settings

MOYSKLAD_SECRET = "ms-hook-9f1c2e7a"
WMS_SECRET = "wms-hook-4b8d0c13"
SIGNING_KEY = b"wms-signing-key-5e2a"
DEMAND_WEBHOOK = {"events": []}  # stored, and processed into nothing


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, content=json.dumps(body).encode(), headers=headers or {}, timeout=5)


@pytest.fixture
def receiver(recorder: Any) -> Iterator[WebhookServer]:
    access = WebhookAccess(
        moysklad_secret=MOYSKLAD_SECRET, wms_secret=WMS_SECRET, wms_signature=SignatureScheme(SIGNING_KEY)
    )
    server = WebhookServer(WebhookReceiver(recorder, access)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/moysklad/webhook/ms-hook-9f1c2e7b",  # one character off
        "/moysklad/webhook/ms-hook-9f1c2e7",  # a prefix of the secret
        "/moysklad/webhook/ms-hook-9f1c2e7a0",  # the secret and more
        "/moysklad/webhook/",
        "/moysklad/webhook",
        "/moysklad/webhook/ms-hook-9f1c2e7a/",
        "/moysklad/webhook/%C3%BC",
        "/wms/status/ms-hook-9f1c2e7a",  # the other webhook's secret
    ],
)
def test_a_moysklad_webhook_is_taken_only_at_its_secret_path(receiver: WebhookServer, path: str) -> None:
    assert post(f"{receiver.url}/moysklad/webhook/{MOYSKLAD_SECRET}", DEMAND_WEBHOOK).status_code == 200

    refused = post(receiver.url + path, DEMAND_WEBHOOK)

    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    assert MOYSKLAD_SECRET not in refused.text and WMS_SECRET not in refused.text


def test_a_path_that_is_not_ascii_is_not_found_rather_than_an_error(receiver: WebhookServer) -> None:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as connection:
        connection.sendall(
            b"POST /moysklad/webhook/\xfc\xfc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}"
        )
        status_line = connection.makefile("rb").readline()
    assert status_line.split()[1] == b"404"


def test_a_wms_status_is_taken_at_its_secret_path(receiver: WebhookServer) -> None:
    assert send_status(f"{receiver.url}/wms/status/{WMS_SECRET}", "PO-1", "PICKING") == 200
    assert send_status(f"{receiver.url}/wms/status/{WMS_SECRET[:-1]}", "PO-1", "PICKING") == 404


def test_a_signed_wms_status_is_taken_only_with_the_hmac_of_its_body(receiver: WebhookServer) -> None:
    url = f"{receiver.url}/wms/status"
    body = json.dumps({"id": "PO-1", "status": "PICKING"}).encode()
    good = SignatureScheme(SIGNING_KEY).sign(body)
    other_key = SignatureScheme(b"another-key").sign(body)
    other_body = SignatureScheme(SIGNING_KEY).sign(body + b" ")

    def answer(headers: dict[str, str]) -> int:
        return httpx.post(url, content=body, headers=headers, timeout=5).status_code

    assert good.startswith("sha256=") and len(good) == len("sha256=") + 64
    assert answer({"X-Signature": good}) == 200
    assert answer({"x-signature": "sha256=" + good.removeprefix("sha256=").upper()}) == 200
    assert answer({}) == 401
    assert answer({"X-Signature": other_key}) == 401
    assert answer({"X-Signature": other_body}) == 401
    assert answer({"X-Signature": good.removeprefix("sha256=")}) == 401  # the scheme's prefix is part of it
    assert answer({"X-Other": good}) == 401
    assert send_status(url, "PO-1", "PICKED", SignatureScheme(SIGNING_KEY)) == 200


def test_the_signature_header_and_scheme_are_configured(recorder: Any) -> None:
    settings = Settings(
        wms_webhook_signing_key="shopify-style-key",
        wms_webhook_signature_header="X-Shopify-Hmac-Sha256",
        wms_webhook_signature_prefix="",
        wms_webhook_signature_encoding="base64",
    )
    adapters = build_adapters(settings, recorder=recorder)
    assert adapters.receiver is not None
    server = WebhookServer(adapters.receiver).start()
    try:
        scheme = SignatureScheme(b"shopify-style-key", "X-Shopify-Hmac-Sha256", "", "base64")
        assert send_status(f"{server.url}/wms/status", "PO-1", "PICKING", scheme) == 200
        assert send_status(f"{server.url}/wms/status", "PO-1", "PICKING", SignatureScheme(b"x" * 8)) == 401
    finally:
        server.stop()


def test_without_a_signing_key_no_status_is_taken_unsigned_at_the_bare_path(recorder: Any) -> None:
    server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(wms_secret=WMS_SECRET))).start()
    try:
        assert send_status(f"{server.url}/wms/status", "PO-1", "PICKING") == 404
        assert send_status(f"{server.url}/wms/status", "PO-1", "PICKING", SignatureScheme(b"guessed")) == 404
    finally:
        server.stop()


@pytest.fixture
def closed_runner(database_url: str, recorder: Any) -> Iterator[tuple[str, Runner]]:
    """`ledger adapters run`'s HTTP side with LEDGER_METRICS_AUTH=required and a token in the database."""
    token = new_token(database_url, "scraper", "reader")
    settings = Settings(
        database_url=database_url,
        metrics_auth="required",
        moysklad_webhook_secret=MOYSKLAD_SECRET,
        wms_webhook_secret=WMS_SECRET,
        adapters_http_port=0,
    )
    runner = Runner(build_adapters(settings, recorder=recorder), settings).start()
    try:
        yield token, runner
    finally:
        runner.stop()


def test_with_metrics_auth_required_metrics_need_a_ledger_token(closed_runner: tuple[str, Runner]) -> None:
    token, runner = closed_runner
    assert runner.server is not None
    base = runner.server.url

    refused = httpx.get(f"{base}/metrics", timeout=5)
    wrong = httpx.get(f"{base}/metrics", headers=bearer("sl_live_" + "x" * 43), timeout=5)
    allowed = httpx.get(f"{base}/metrics", headers=bearer(token), timeout=5)

    assert refused.status_code == wrong.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.headers["content-type"] == "application/problem+json"
    assert allowed.status_code == 200 and "ledger_adapter_position" in allowed.text
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    # HEAD as GET (RFC 9110): the probe open, the metrics behind the same token.
    assert httpx.head(f"{base}/healthz", timeout=5).status_code == 200
    assert httpx.head(f"{base}/metrics", timeout=5).status_code == 401
    assert httpx.head(f"{base}/metrics", headers=bearer(token), timeout=5).status_code == 200


def test_a_refused_scrape_is_told_why_in_the_apis_words(closed_runner: tuple[str, Runner]) -> None:
    """One detail for every refusal would tell a scraper whose token expired that it sent none:
    the refusal says which, in the words of the API's gate."""
    _, runner = closed_runner
    assert runner.server is not None
    metrics = f"{runner.server.url}/metrics"

    details = {
        sent: httpx.get(metrics, headers={} if sent is None else {"Authorization": sent}, timeout=5).json()[
            "detail"
        ]
        for sent in (None, "Bearer sl_live_" + "x" * 43, "Basic c2NyYXBlcjpwdw==", "")
    }

    assert details == {
        None: NO_TOKEN,
        "Bearer sl_live_" + "x" * 43: NOT_VALID,
        "Basic c2NyYXBlcjpwdw==": NOT_VALID,  # a header, but no bearer token in it: as the API
        "": NOT_VALID,
    }


def test_the_webhooks_take_their_own_secret_and_no_ledger_token(closed_runner: tuple[str, Runner]) -> None:
    token, runner = closed_runner
    assert runner.server is not None
    base = runner.server.url

    assert post(f"{base}/moysklad/webhook/{MOYSKLAD_SECRET}", DEMAND_WEBHOOK).status_code == 200
    assert send_status(f"{base}/wms/status/{WMS_SECRET}", "PO-1", "PICKING") == 200
    # A ledger token is no key to a webhook: not in place of its secret, not beside a wrong one.
    assert post(f"{base}/moysklad/webhook/{token}", DEMAND_WEBHOOK).status_code == 404
    assert post(f"{base}/moysklad/webhook/x", DEMAND_WEBHOOK, bearer(token)).status_code == 404
    assert post(f"{base}/wms/status", {"id": "PO-1", "status": "NEW"}, bearer(token)).status_code == 404


def test_metrics_stay_open_unless_metrics_auth_is_required(database_url: str, recorder: Any) -> None:
    new_token(database_url, "admin", "admin")
    settings = Settings(database_url=database_url, wms_webhook_secret=WMS_SECRET, adapters_http_port=0)
    runner = Runner(build_adapters(settings, recorder=recorder), settings).start()
    try:
        assert runner.server is not None
        assert httpx.get(f"{runner.server.url}/metrics", timeout=5).status_code == 200
    finally:
        runner.stop()


@pytest.mark.parametrize(
    ("allowed_hosts", "host", "status"),
    [
        (None, "evil.example", 400),  # unset: the loopback names only
        (None, "localhost:8010", 200),
        ("hooks.shop.example", "hooks.shop.example", 200),
        ("hooks.shop.example", "127.0.0.1", 400),
        ("*", "anything.example", 200),
    ],
)
def test_other_hosts_are_refused_as_the_api_refuses_them(
    recorder: Any, allowed_hosts: str | None, host: str, status: int
) -> None:
    settings = Settings(allowed_hosts=allowed_hosts, moysklad_webhook_secret=MOYSKLAD_SECRET)
    adapters = build_adapters(settings, recorder=recorder)
    assert adapters.receiver is not None
    server = WebhookServer(adapters.receiver).start()
    try:
        webhook = post(f"{server.url}/moysklad/webhook/{MOYSKLAD_SECRET}", DEMAND_WEBHOOK, {"Host": host})
        metrics = httpx.get(f"{server.url}/metrics", headers={"Host": host}, timeout=5)
        probe = httpx.get(f"{server.url}/healthz", headers={"Host": host}, timeout=5)
    finally:
        server.stop()
    assert webhook.status_code == metrics.status_code == status
    if status == 400:
        assert webhook.json()["type"] == "invalid-host"
    assert probe.status_code == 200


def _status_of(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        return int(connection.makefile("rb").readline().split()[1])


@pytest.mark.parametrize("allowed_hosts", [None, "*"])
def test_a_request_with_two_host_headers_is_refused_400(recorder: Any, allowed_hosts: str | None) -> None:
    """RFC 9112 §3.2: a proxy in front may have routed by one Host and the receiver read the other
    (it kept the last); a request names one, else 400, whatever LEDGER_ALLOWED_HOSTS allows."""
    settings = Settings(allowed_hosts=allowed_hosts, moysklad_webhook_secret=MOYSKLAD_SECRET)
    adapters = build_adapters(settings, recorder=recorder)
    assert adapters.receiver is not None
    server = WebhookServer(adapters.receiver).start()
    body = json.dumps(DEMAND_WEBHOOK).encode()
    webhook = f"POST /moysklad/webhook/{MOYSKLAD_SECRET} HTTP/1.1\r\n".encode()
    tail = b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    try:
        one = _status_of(server.port, webhook + b"Host: 127.0.0.1\r\n" + tail)
        two = _status_of(server.port, webhook + b"Host: evil.example\r\nHost: 127.0.0.1\r\n" + tail)
        same_twice = _status_of(server.port, webhook + b"Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n" + tail)
        metrics = _status_of(
            server.port,
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        other = _status_of(
            server.port, b"GET /elsewhere HTTP/1.1\r\nHost: a\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
    finally:
        server.stop()
    assert one == 200
    assert two == same_twice == metrics == other == 400


@pytest.mark.parametrize("allowed_hosts", [None, "*"])
def test_an_http_1_1_request_without_a_host_header_is_refused_400_naming_it(
    recorder: Any, allowed_hosts: str | None
) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request names its Host, else 400, whatever LEDGER_ALLOWED_HOSTS
    allows (`*` let it through). HTTP/1.0 may name none: the allowed names judge it, as before."""
    settings = Settings(allowed_hosts=allowed_hosts, moysklad_webhook_secret=MOYSKLAD_SECRET)
    adapters = build_adapters(settings, recorder=recorder)
    assert adapters.receiver is not None
    server = WebhookServer(adapters.receiver).start()
    body = json.dumps(DEMAND_WEBHOOK).encode()
    tail = b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    webhook = f"POST /moysklad/webhook/{MOYSKLAD_SECRET} ".encode()
    try:
        refused = [
            raw_answer(server.port, webhook + b"HTTP/1.1\r\n" + tail),
            raw_answer(server.port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"),
            raw_answer(server.port, b"GET /elsewhere HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ]
        probe = raw_answer(server.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        old = raw_answer(server.port, webhook + b"HTTP/1.0\r\n" + tail)
    finally:
        server.stop()
    for status, headers, problem in refused:
        assert status == 400, problem
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(problem)["type"] == "invalid-host"
        assert "Host" in json.loads(problem)["detail"] and "none" in json.loads(problem)["detail"]
    assert probe[0] == 200  # probes are never asked for a Host (as with two of them)
    assert old[0] == (200 if allowed_hosts == "*" else 400)


@pytest.mark.parametrize("variable", ["LEDGER_MOYSKLAD_WEBHOOK_SECRET", "LEDGER_WMS_WEBHOOK_SECRET"])
@pytest.mark.parametrize(
    "secret", ["Zm9v/YmFyYmF6+cXV4=", "abc def 12345", "snow☃man", "..", "50%off", "a?b"]
)
def test_a_webhook_secret_no_sender_can_put_in_a_path_as_it_is_is_refused_at_start_by_name(
    monkeypatch: pytest.MonkeyPatch, database_url: str, capsys: Any, variable: str, secret: str
) -> None:
    """A base64 secret with a `/` was accepted, and every delivery was then a 404: the path a
    sender posts to never matched it."""
    from ledger.cli import main

    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_WMS_BASE_URL", "http://127.0.0.1:9")  # an adapter to run; never reached
    monkeypatch.setenv("LEDGER_WMS_API_KEY", "wms-api-key-123456")
    monkeypatch.setenv(variable, secret)

    code = main(["adapters", "run", "--once"])

    err = capsys.readouterr().err.strip()
    assert code == 2 and variable in err and "A-Za-z0-9 and ._~!$&'()*+,;=:@-" in err, err
    assert secret not in err and err.count("\n") == 0 and "Traceback" not in err, err
    assert not Path(database_url.removeprefix("sqlite:///")).exists()  # no new ledger for a refused start


@pytest.mark.parametrize("secret", ["Zm9vYmFyYmF6+cXV4=", "key:with@and!"])
def test_a_webhook_secret_senders_put_in_a_path_as_it_is_is_taken_at_start_and_matched(
    recorder: Any, database_url: str, secret: str
) -> None:
    """Base64 without a `/` (its `+` and `=`) and RFC 3986's other path characters are sent as they
    are: such a secret receives its deliveries, and a start with it is not refused (an upgrade that
    refused it stopped adapters that worked)."""
    from adapters.inbound import WebhookAccess, WebhookReceiver
    from adapters.runner import refuse_unusable_webhook_secrets
    from adapters.webhook_server import WebhookServer

    refuse_unusable_webhook_secrets(Settings(database_url=database_url, moysklad_webhook_secret=secret))
    server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(moysklad_secret=secret))).start()
    try:
        taken = httpx.post(f"{server.url}/moysklad/webhook/{secret}", content=b'{"events": []}', timeout=5)
    finally:
        server.stop()
    assert taken.status_code == 200, taken.text
