"""Fixtures for the adapter tests: a ledger on SQLite, the adapters' database, fake servers on 127.0.0.1."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moysklad_setup import MAPPED, OTHER_STORE_UUID, PRODUCT, SECRET, STORE_UUID, VARIANT

from adapters.bitrix import BitrixConfig, BitrixTarget
from adapters.db import open_database
from adapters.httpserver import HttpServer
from adapters.inbound import WebhookAccess, WebhookReceiver
from adapters.mappings import MappingRow, Mappings, save
from adapters.outbound import WorkerLimits
from adapters.webhook_server import WebhookServer
from devtools.fakes.bitrix import FakeBitrix
from devtools.fakes.moysklad import FakeMoySklad
from devtools.fakes.wms import FakeWms
from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import EventType, Line, StockEvent
from ledger.storage.opening import open_recorder

FAST = WorkerLimits(
    read_events_max=1000,
    retries_max=3,
    request_retries_max=4,
    backoff_initial_s=0.005,
    backoff_max_s=0.05,
    poll_interval_s=0.01,
)
_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def _spool_in_the_test_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() built without a database URL would put the webhook spool beside ./ledger.db, in
    the checkout; a test that names its own directory still does."""
    monkeypatch.setenv("LEDGER_ADAPTERS_SPOOL_DIR", str(tmp_path / "webhook-spool"))


def event(
    kind: EventType, store: str, *lines: tuple[str, int], source: str = "tests/adapters", **fields: Any
) -> StockEvent:
    return StockEvent(
        event_id=f"a-{next(_ids)}",
        source=source,
        type=kind,
        time=datetime.now(UTC),
        store_id=store,
        lines=tuple(Line(sku, qty) for sku, qty in lines),
        **fields,
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


BOTH_DATABASES = ("sqlite", "postgres")


def either_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`database_url` on either database, for a module that runs every test on both:
    `database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)`."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres").create_database())


@pytest.fixture
def ledger(database_url: str) -> Iterator[Any]:
    book = build_ledger(Settings(database_url=database_url, expiry_interval_ms=50, request_timeout_s=20))
    book.start()
    try:
        yield book
    finally:
        book.stop()


@pytest.fixture
def record(ledger: Any) -> Callable[..., list[Any]]:
    def submit(*events: StockEvent) -> list[Any]:
        results = ledger.submit_and_wait(list(events))
        assert all(r.outcome.value in ("accepted", "duplicate") for r in results), results
        return results

    return submit


@pytest.fixture
def recorder(database_url: str, ledger: Any) -> Iterator[Any]:
    db = open_database(database_url, 4, 10)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=("sqlite", "postgres"))
def ledger_only_recorder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The ledger's tables on either database, and none of the adapters' (they make their own)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = str(request.getfixturevalue("postgres").create_database())
    db = open_recorder(url, 2, 10)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def mappings(recorder: Any) -> Mappings:
    return Mappings(recorder, refresh_s=0)


@pytest.fixture
def mapped(recorder: Any) -> Callable[..., None]:
    def add(*rows: tuple[Any, ...]) -> None:
        save(recorder, [MappingRow(*row) for row in rows])

    return add


def bitrix_target(recorder: Any, mappings: Any, bitrix: Any, **config: Any) -> BitrixTarget:
    """A Bitrix target on the fake portal, at the fake's own rate (`config` adds to it)."""
    fake, server = bitrix
    settings = {"burst_requests_max": 1000, "requests_per_s": 1000.0, "timeout_s": 2.0, **config}
    portal = BitrixConfig(webhook_url=server.url + fake.webhook_path, **settings)
    return BitrixTarget(recorder, mappings, portal)


def _serve(fake: Any) -> Iterator[tuple[Any, HttpServer]]:
    server = HttpServer(fake).start()
    try:
        yield fake, server
    finally:
        server.stop()


@pytest.fixture
def bitrix() -> Iterator[tuple[FakeBitrix, HttpServer]]:
    fake = FakeBitrix(burst_requests_max=1000, drain_per_s=1000.0)
    fake.stores.update({"1", "2", "3"})
    yield from _serve(fake)


@pytest.fixture
def moysklad() -> Iterator[tuple[FakeMoySklad, HttpServer]]:
    fake = FakeMoySklad(requests_per_window=1000, window_s=1.0)
    server = HttpServer(fake).start()
    fake.origin = server.url
    try:
        yield fake, server
    finally:
        server.stop()


@pytest.fixture
def moysklad_account(
    moysklad: tuple[FakeMoySklad, HttpServer], mapped: Any
) -> tuple[FakeMoySklad, HttpServer]:
    """The fake MoySklad with moysklad_setup.py's stores and assortment, each mapped."""
    fake, _ = moysklad
    fake.stores.update({STORE_UUID, OTHER_STORE_UUID})
    fake.products.update({VARIANT: "variant", PRODUCT: "product"})
    mapped(*MAPPED)
    return moysklad


@pytest.fixture
def receiver(recorder: Any) -> Iterator[WebhookServer]:
    """The adapters' webhook server, taking MoySklad's notifications at moysklad_setup's SECRET."""
    server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(moysklad_secret=SECRET))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def wms() -> Iterator[tuple[FakeWms, HttpServer]]:
    yield from _serve(FakeWms())
