"""One `ledger serve` on a SQLite file for the whole end-to-end tier; each test uses its own stores."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support.server import LedgerServer

BODY_BYTES_MAX = 1_000_000
E2E_ENV = {
    "LEDGER_BODY_BYTES_MAX": str(BODY_BYTES_MAX),
    "LEDGER_EXPIRY_INTERVAL_MS": "100",
}


@pytest.fixture(scope="session")
def ledger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerServer]:
    directory = tmp_path_factory.mktemp("e2e")
    server = LedgerServer(f"sqlite:///{directory / 'ledger.db'}", directory, E2E_ENV, name="e2e")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(ledger_server: LedgerServer) -> Iterator[httpx.Client]:
    with ledger_server.client() as http:
        yield http
