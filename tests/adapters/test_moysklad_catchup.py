"""MoySklad's demands read back by time (adapters/moysklad_catchup.py): a shipment whose
notification was lost (MoySklad tries a webhook a few times, then drops it) is recorded all the
same, once; a demand that cannot be recorded yet holds the cursor at its time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import event

from adapters.db import transaction
from adapters.moysklad import MoySkladClient, MoySkladConfig
from adapters.moysklad_catchup import MoySkladCatchUp
from adapters.moysklad_demands import DemandSync
from adapters.sink import LedgerSink
from ledger.domain.model import EventType

STORE_UUID = "7a1f0000-0000-0000-0000-000000000001"
PRODUCT = "0b3c0000-0000-0000-0000-0000000000b2"
UNMAPPED = "0b3c0000-0000-0000-0000-0000000000ff"


@pytest.fixture
def account(moysklad: Any, mapped: Any) -> Any:
    fake, _ = moysklad
    fake.stores.add(STORE_UUID)
    fake.products.update({PRODUCT: "product", UNMAPPED: "product"})
    mapped(("moysklad", "store", "shop-1", STORE_UUID), ("moysklad", "sku", "SKU-2", PRODUCT, "product"))
    return moysklad


def catch_up(
    server: Any, recorder: Any, mappings: Any, ledger: Any, page_rows: int = 1000
) -> MoySkladCatchUp:
    client = MoySkladClient(
        MoySkladConfig(base_url=server.url + "/api/remap/1.2", token="fake-moysklad-token", timeout_s=2.0)
    )
    return MoySkladCatchUp(recorder, client, DemandSync(recorder, mappings, client, LedgerSink(ledger)))


def on_hand(ledger: Any, sku: str) -> int:
    return ledger.levels("shop-1", [sku])[0].level.on_hand_units


def test_a_demand_whose_notification_was_lost_is_recorded_once_by_the_catch_up(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    first = fake.add_demand(STORE_UUID, [(PRODUCT, 4)])
    fake.add_demand(STORE_UUID, [(PRODUCT, 1)])
    fake.outbox.clear()  # the notifications, lost while `ledger adapters run` restarted
    catching_up = catch_up(server, recorder, mappings, ledger)

    assert catching_up.run_once() == 2
    assert on_hand(ledger, "SKU-2") == 5
    assert catching_up.run_once() == 0  # read again within the overlap: nothing recorded twice
    fake.update_demand(first, positions=[(PRODUCT, 6)])  # corrected, and this notice lost too
    fake.outbox.clear()
    assert catching_up.run_once() == 1
    assert on_hand(ledger, "SKU-2") == 3
    cursor = catching_up.cursor()
    assert cursor is not None and datetime.now(UTC) - cursor < timedelta(minutes=1)


def test_the_demands_are_read_page_by_page_oldest_change_first(account, recorder, mappings, ledger, record):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 100)))
    start = datetime.now(UTC) - timedelta(minutes=30)
    for minute in (5, 1, 3, 2, 4):  # made out of order
        fake.add_demand(STORE_UUID, [(PRODUCT, minute)], moment=start + timedelta(minutes=minute))
    client = catch_up(server, recorder, mappings, ledger).client
    rows = list(client.demands_updated_since(start + timedelta(minutes=2), page_rows=2))
    assert [row["positions"] for row in rows] and len(rows) == 4
    assert [row["updated"] for row in rows] == sorted(row["updated"] for row in rows)


def test_a_demand_that_cannot_be_recorded_yet_holds_the_cursor_at_its_time(
    account, recorder, mappings, mapped, ledger, record
):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10), ("SKU-9", 10)))
    early = datetime.now(UTC) - timedelta(minutes=20)
    fake.add_demand(STORE_UUID, [(UNMAPPED, 2)], moment=early)  # its product not mapped yet
    fake.add_demand(STORE_UUID, [(PRODUCT, 3)])
    fake.outbox.clear()
    catching_up = catch_up(server, recorder, mappings, ledger)

    assert catching_up.run_once() == 1  # the other is recorded
    cursor = catching_up.cursor()
    assert cursor is not None and abs(cursor - early) < timedelta(seconds=1)
    mapped(("moysklad", "sku", "SKU-9", UNMAPPED, "product"))
    assert catching_up.run_once() == 1
    assert (on_hand(ledger, "SKU-2"), on_hand(ledger, "SKU-9")) == (7, 8)
    assert catching_up.cursor() > early  # type: ignore[operator]


def test_a_demand_changed_while_the_list_is_read_moves_no_other_out_of_the_pages(
    account, recorder, mappings, ledger, record
):
    """Paged by offset, one demand changed after it was read moved every later row up a place, and
    the first row of the next page was never read (nor by a later catch-up: the cursor passed it)."""
    fake, server = account
    start = datetime.now(UTC) - timedelta(minutes=30)
    made = [
        fake.add_demand(STORE_UUID, [(PRODUCT, 1)], moment=start + timedelta(minutes=n)) for n in range(5)
    ]
    client = catch_up(server, recorder, mappings, ledger).client
    read: list[str] = []
    for row in client.demands_updated_since(start, page_rows=2):
        read.append(row["id"])
        if len(read) == 1:
            fake.update_demand(made[0], positions=[(PRODUCT, 2)])  # now the newest of all
    assert set(read) == set(made), "a demand was never read"
    assert read[-1] == made[0]  # read again once changed


def test_a_demand_refused_for_longer_than_the_hold_is_given_up_with_an_alert_and_holds_nothing(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    fake.add_demand(STORE_UUID, [(UNMAPPED, 1)], moment=datetime.now(UTC) - timedelta(minutes=50))
    fake.add_demand(STORE_UUID, [(PRODUCT, 3)])
    fake.outbox.clear()
    later = [datetime.now(UTC)]
    catching_up = catch_up(server, recorder, mappings, ledger)
    catching_up.clock = lambda: later[0]
    assert catching_up.run_once() == 1
    held = catching_up.cursor()
    later[0] += timedelta(minutes=30)  # the refused one is 80 minutes old now: past the hour's hold
    catching_up.run_once()
    assert catching_up.cursor() > held + timedelta(minutes=30)  # type: ignore[operator]
    with transaction(recorder) as tx:
        alerts = tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'")
    assert len(alerts) == 1 and "given up by the catch-up" in alerts[0]["detail"], alerts
    assert on_hand(ledger, "SKU-2") == 7


def test_a_catch_up_asked_to_stop_ends_and_keeps_where_it_got_to(account, recorder, mappings, ledger, record):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    start = datetime.now(UTC) - timedelta(minutes=10)
    for n in range(3):
        fake.add_demand(STORE_UUID, [(PRODUCT, 1)], moment=start + timedelta(minutes=n))
    fake.outbox.clear()
    catching_up = catch_up(server, recorder, mappings, ledger)
    asked = iter([False, True])
    assert catching_up.run_once(lambda: next(asked, True)) == 1  # one recorded, then stopped
    cursor = catching_up.cursor()
    assert cursor is not None and abs(cursor - start) < timedelta(seconds=1)
    assert catching_up.run_once() == 2
    assert on_hand(ledger, "SKU-2") == 7
