"""An event the ledger answers `invalid` is refused for good, not taken for the ledger being away.

Taken for an outage (SinkError), one such delivery held every later delivery of every system
back, in order, for good, and one such MoySklad deletion held the audit's window and every
deletion after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import event
from ledger_stand_ins import RefusingLedger
from moysklad_setup import PRODUCT, STORE_UUID, client_for, on_hand

from adapters.cursors import load_cursor
from adapters.db import transaction
from adapters.inbound import InboxWorker, store_delivery
from adapters.moysklad_audit import SETTLE_S
from adapters.moysklad_catchup import MoySkladCatchUp
from adapters.moysklad_deletions import CURSOR
from adapters.moysklad_demands import DemandSync
from adapters.sink import EventsRefused, LedgerSink, SinkError
from ledger.domain.model import EventType, StockEvent


def alerts(recorder: Any) -> list[Any]:
    with transaction(recorder) as tx:
        return list(tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'"))


def test_an_invalid_answer_is_a_refusal_and_no_answer_an_outage(ledger, record):
    never = RefusingLedger(ledger, lambda e: True)
    with pytest.raises(EventsRefused, match="invalid"):
        LedgerSink(never).record([event(EventType.RECEIPT, "shop-1", ("SKU-1", 1))])

    class Away:
        def submit_and_wait(self, events: list[StockEvent]) -> Any:
            raise TimeoutError("no answer")

    with pytest.raises(SinkError, match="did not record"):
        LedgerSink(Away()).record([event(EventType.RECEIPT, "shop-1", ("SKU-1", 1))])


def test_a_delivery_whose_events_the_ledger_refuses_is_given_up_and_holds_no_other_back(
    moysklad_account, recorder, mappings, ledger, record
):
    fake, server = moysklad_account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    demands = [fake.add_demand(STORE_UUID, [(PRODUCT, n)]) for n in (1, 2, 3)]
    for n, demand in enumerate(demands, 1):
        store_delivery(recorder, "moysklad", f"req-{n}", fake.webhook_body(demand))
    refusing = RefusingLedger(ledger, lambda e: e.event_id == f"demand:{demands[1]}")
    sync = DemandSync(recorder, mappings, client_for(server), LedgerSink(refusing))
    inbox = InboxWorker(recorder, {"moysklad": sync.handle}, retries_max=2, retry_first_s=0)

    for _ in range(3):
        inbox.run_once()

    assert on_hand(ledger, "shop-1", "SKU-2") == [10 - 1 - 3]  # the first and the third
    [alert] = alerts(recorder)
    assert alert["subject"] == "delivery req-2"
    assert alert["detail"].startswith("given up after 2 attempts") and "invalid" in alert["detail"]


def test_a_deletion_whose_return_the_ledger_refuses_is_alerted_and_the_audit_read_on(
    moysklad_account, recorder, mappings, ledger, record
):
    fake, server = moysklad_account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    client = client_for(server)
    refused_demand: list[str] = []
    refusing = RefusingLedger(ledger, lambda e: bool(refused_demand) and refused_demand[0] in e.event_id)
    demands = DemandSync(recorder, mappings, client, LedgerSink(refusing))
    catching_up = MoySkladCatchUp(recorder, client, demands)
    catching_up.clock = lambda: datetime.now(UTC) + timedelta(seconds=SETTLE_S + 5)
    made = [fake.add_demand(STORE_UUID, [(PRODUCT, 1)]) for _ in range(3)]
    assert catching_up.run_once() == 3
    for demand in made:
        fake.delete_demand(demand)
    fake.outbox.clear()  # their DELETE notifications, lost
    refused_demand.append(made[1])
    deleted_at = datetime.now(UTC)

    catching_up.run_once()

    assert on_hand(ledger, "shop-1", "SKU-2") == [10 - 1]  # two of the three returned
    [alert] = alerts(recorder)
    assert made[1] in alert["subject"] and "invalid" in alert["detail"]
    cursor = load_cursor(recorder, CURSOR)
    assert cursor is not None and cursor >= deleted_at + timedelta(seconds=5)  # read on, not held
