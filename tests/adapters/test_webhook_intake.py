"""MoySklad demand webhooks while the ledger's writer is saturated: every one answered in time, none lost.

MoySklad waits 1500 ms for a 200 or 204, tries 3 more times at once, then drops the notification
(md/dictionaries/_webhook.md); the fake's `send_webhook` behaves the same way. Every test here
runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import BOTH_DATABASES, either_database, event

from adapters.db import transaction
from adapters.runner import Runner, build_adapters
from adapters.sink import LedgerSink
from devtools.fakes.moysklad_webhooks import WEBHOOK_ANSWER_DEADLINE_S, WebhookOutcome, send_webhook
from ledger.config import Settings
from ledger.domain.model import EventType

pytestmark = pytest.mark.slow

STORE_UUID = "7a1f0000-0000-0000-0000-000000000001"
PRODUCT = "0b3c0000-0000-0000-0000-0000000000b2"
BURSTS = 5
DELIVERIES_PER_BURST = 20
LOCK_HELD_S = 2 * WEBHOOK_ANSWER_DEADLINE_S  # longer than the deadline: the database cannot take them
STOCK_UNITS = 1000
BULK_LINES = 1000  # lines of each event the saturating thread records
DEADLINE_S = 90.0


database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)  # every test on both


@pytest.fixture
def account(moysklad: Any, mapped: Any, record: Any) -> Any:
    fake, _ = moysklad
    fake.stores.add(STORE_UUID)
    fake.products[PRODUCT] = "product"
    mapped(("moysklad", "store", "shop-1", STORE_UUID), ("moysklad", "sku", "SKU-1", PRODUCT, "product"))
    record(event(EventType.RECEIPT, "shop-1", ("SKU-1", STOCK_UNITS)))
    return moysklad


@pytest.fixture
def runner(account: Any, database_url: str, ledger: Any, recorder: Any, tmp_path: Path) -> Iterator[Runner]:
    _, server = account
    settings = Settings(
        database_url=database_url,
        moysklad_base_url=server.url + "/api/remap/1.2",
        moysklad_token="fake-moysklad-token",
        moysklad_organization_id="org-1",
        moysklad_agent_id="agent-1",
        moysklad_requests_per_window=1000,
        moysklad_window_s=1.0,
        moysklad_webhook_secret="s3cret",
        adapters_http_port=0,
        adapters_spool_dir=str(tmp_path / "spool"),
        adapters_backoff_initial_ms=10,
        adapters_backoff_max_ms=200,
    )
    running = Runner(build_adapters(settings, LedgerSink(ledger), recorder), settings).start()
    try:
        yield running
    finally:
        running.stop()


def saturate(ledger: Any, stop: threading.Event) -> None:
    """Keeps the writer busy with big receipts until stopped."""
    while not stop.is_set():
        lines = [(f"BULK-{n}", 1) for n in range(BULK_LINES)]
        ledger.submit_and_wait([event(EventType.RECEIPT, "bulk", *lines) for _ in range(4)])


def send_bursts(fake: Any, url: str, bursts: int = BURSTS) -> dict[str, WebhookOutcome]:
    """Demands shipped in MoySklad, each notified once, in bursts; demand id -> how it went."""
    sent: dict[str, WebhookOutcome] = {}
    with ThreadPoolExecutor(max_workers=DELIVERIES_PER_BURST) as pool:
        for _ in range(bursts):
            demands = [fake.add_demand(STORE_UUID, [(PRODUCT, 1)]) for _ in range(DELIVERIES_PER_BURST)]
            outcomes = pool.map(lambda d: send_webhook(url, fake.webhook_body(d)), demands)
            sent.update(zip(demands, outcomes, strict=True))
            time.sleep(0.2)
    return sent


def wait_until(
    check: Callable[[], bool], explain: Callable[[], object] = lambda: "", deadline_s: float = DEADLINE_S
) -> None:
    until = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < until, f"the condition was not met before the deadline: {explain()}"
        time.sleep(0.05)


def inbox_state(recorder: Any, spool_dir: Path) -> str:
    with transaction(recorder) as tx:
        rows = tx.fetchall(
            "SELECT processed_at IS NULL AS pending, COUNT(*) AS n, MAX(last_error) AS last_error "
            "FROM adapter_inbox GROUP BY processed_at IS NULL"
        )
    spooled = len(list(spool_dir.glob("*.delivery")))
    return f"inbox {[dict(row) for row in rows]}, {spooled} file(s) in the spool"


def on_hand(ledger: Any) -> int:
    ledger.refresh()
    return int(ledger.levels("shop-1", ["SKU-1"])[0].level.on_hand_units)


def figures(outcomes: list[WebhookOutcome], label: str) -> None:
    first = sorted(o.attempts[0].elapsed_s for o in outcomes)
    p99 = first[min(len(first) - 1, round(0.99 * (len(first) - 1)))]
    in_time = sum(1 for o in outcomes if len(o.attempts) == 1 and o.delivered)
    print(
        f"\n{label}: {in_time}/{len(outcomes)} deliveries answered 200 within "
        f"{WEBHOOK_ANSWER_DEADLINE_S * 1000:.0f} ms at the first attempt; "
        f"p50 {statistics.median(first) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {first[-1] * 1000:.1f} ms"
    )


def test_every_demand_webhook_is_answered_in_time_and_recorded_once_while_the_writer_is_saturated(
    account, runner, ledger, recorder, database_url, tmp_path
):
    fake, _ = account
    assert runner.server is not None
    stop = threading.Event()
    writer_load = threading.Thread(target=saturate, args=(ledger, stop), daemon=True)
    writer_load.start()
    try:
        time.sleep(0.5)  # the writer is busy before the first delivery
        outcomes = list(send_bursts(fake, f"{runner.server.url}/moysklad/webhook/s3cret").values())
    finally:
        stop.set()
        writer_load.join(DEADLINE_S)
    figures(outcomes, f"saturated writer, {database_url.split(':')[0]}")

    assert [o.attempts[-1].status for o in outcomes if not o.delivered] == []
    assert all(len(o.attempts) == 1 for o in outcomes), [o.attempts for o in outcomes if len(o.attempts) > 1]
    shipped = BURSTS * DELIVERIES_PER_BURST
    wait_until(
        lambda: on_hand(ledger) <= STOCK_UNITS - shipped, lambda: inbox_state(recorder, tmp_path / "spool")
    )
    time.sleep(0.5)  # anything recorded twice would show now
    assert on_hand(ledger) == STOCK_UNITS - shipped


@contextlib.contextmanager
def inbox_locked(database_url: str, recorder: Any) -> Iterator[None]:
    """Another connection holds what an insert into the inbox needs, until the block ends."""
    if database_url.startswith("sqlite"):
        path = recorder.datastore.pool.db_name
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # SQLite's one write lock
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    with transaction(recorder) as tx:
        tx.execute("LOCK TABLE adapter_inbox IN ACCESS EXCLUSIVE MODE")
        yield


def inbox_rows(recorder: Any) -> list[tuple[str, bool]]:
    with transaction(recorder) as tx:
        rows = tx.fetchall("SELECT delivery_id, processed_at FROM adapter_inbox ORDER BY received_at")
    return [(row["delivery_id"], row["processed_at"] is not None) for row in rows]


def test_deliveries_the_database_cannot_take_in_time_are_spooled_answered_and_recorded_once(
    account, runner, ledger, recorder, database_url, tmp_path
):
    fake, _ = account
    assert runner.server is not None
    url = f"{runner.server.url}/moysklad/webhook/s3cret"
    release = threading.Timer(LOCK_HELD_S, lambda: None)
    with inbox_locked(database_url, recorder):
        release.start()
        sent = send_bursts(fake, url, bursts=1)
        outcomes = list(sent.values())
        spooled = sorted((tmp_path / "spool").glob("*.delivery"))
        # Redeliveries of the same notifications (same requestId) while they are still spooled.
        again = [send_webhook(url, fake.webhook_body(d), o.request_id) for d, o in list(sent.items())[:3]]
        release.join()
    figures(outcomes, f"inbox locked for {LOCK_HELD_S:.1f} s, {database_url.split(':')[0]}")

    assert all(o.delivered and len(o.attempts) == 1 for o in outcomes + again)
    assert len(spooled) == DELIVERIES_PER_BURST
    explain = lambda: inbox_state(recorder, tmp_path / "spool")  # noqa: E731
    wait_until(lambda: on_hand(ledger) <= STOCK_UNITS - DELIVERIES_PER_BURST, explain)
    wait_until(lambda: not list((tmp_path / "spool").glob("*.delivery")), explain)
    time.sleep(0.5)
    assert on_hand(ledger) == STOCK_UNITS - DELIVERIES_PER_BURST
    rows = inbox_rows(recorder)
    assert sorted(d for d, _ in rows) == sorted(o.request_id for o in outcomes)
    assert all(processed for _, processed in rows)
