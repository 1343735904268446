"""`ledger consume`'s /metrics with LEDGER_METRICS_AUTH=required takes a token like the API's
(CONTRACT §5); /healthz and /readyz stay open. No broker: the ops server alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from support.access import new_token

from ledger.access.book import TokenBook
from ledger.kafka.cli import metrics_guard
from ledger.kafka.ops import OpsServer
from ledger.storage.recorders import open_recorder


@pytest.fixture
def book(tmp_path: Path) -> Iterator[tuple[str, TokenBook]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    recorder = open_recorder(url, 2, 30)
    tokens = TokenBook(recorder, refresh_interval_s=0.5, last_use_flush_s=10.0)
    try:
        yield url, tokens
    finally:
        tokens.stop()
        recorder.close()


def _serve(guard) -> OpsServer:
    return OpsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, {}), guard).start()


def test_metrics_need_a_valid_token_once_one_exists(book: tuple[str, TokenBook]) -> None:
    url, tokens = book
    tokens.start()
    ops = _serve(metrics_guard(tokens, required=False))
    try:
        base = f"http://127.0.0.1:{ops.port}"
        assert httpx.get(f"{base}/metrics").status_code == 200  # open: no token exists
        token = new_token(url, "scraper", "reader")
        tokens.refresh()
        refused = httpx.get(f"{base}/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert token not in refused.text
        assert httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        ops.stop()


def test_with_auth_required_metrics_need_a_token_before_any_exists(
    book: tuple[str, TokenBook],
) -> None:
    _, tokens = book
    tokens.start()
    ops = _serve(metrics_guard(tokens, required=True))
    try:
        assert httpx.get(f"http://127.0.0.1:{ops.port}/metrics").status_code == 401
    finally:
        ops.stop()
