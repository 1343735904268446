"""Two adapters processes syncing one MoySklad demand at once, on either database: the one that
reads the demand first and stores last must not take the revision the other already took.

Before the revision was taken by a compare and set, the slower process stored its older reading
under the same revision number: its events had the other's ids (taken for duplicates), its row
said the demand held less than the ledger had shipped, and the next correction shipped the
difference again."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import BOTH_DATABASES, either_database, event
from moysklad_setup import STORE_UUID, VARIANT, client_for, on_hand

from adapters.db import transaction
from adapters.moysklad_demands import REVISION_RACES_MAX, DemandSync
from adapters.outbound import TargetUnavailable
from adapters.sink import LedgerSink, SinkError
from ledger.domain.model import EventType

database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)  # every test on both


def two_processes(server: Any, recorder: Any, mappings: Any, ledger: Any) -> tuple[DemandSync, DemandSync]:
    """Two syncs with nothing shared but the database: each its own lock, as two processes."""
    return tuple(DemandSync(recorder, mappings, client_for(server), LedgerSink(ledger)) for _ in range(2))  # type: ignore[return-value]


def revision_of(recorder: Any, demand: str) -> tuple[int, str]:
    with transaction(recorder) as tx:
        row = tx.fetchone(
            "SELECT revision, pending FROM adapter_moysklad_demands WHERE demand_id = %s", (demand,)
        )
    assert row is not None
    return int(row["revision"]), str(row["pending"])


def test_a_process_that_read_a_demand_before_another_recorded_it_reads_it_again(
    moysklad_account, recorder, mappings, ledger, record
):
    fake, server = moysklad_account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-1", 10)))
    slow, quick = two_processes(server, recorder, mappings, ledger)
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 5)])
    quick.handle(fake.webhook_body(demand, "CREATE"))
    fake.update_demand(demand, positions=[(VARIANT, 6)])

    read = slow._read

    def read_then_the_other_process_goes_first(href: str) -> Any:
        seen = read(href)  # 6, as the demand stood when this process read it
        if not getattr(read_then_the_other_process_goes_first, "done", False):
            read_then_the_other_process_goes_first.done = True  # type: ignore[attr-defined]
            fake.update_demand(demand, positions=[(VARIANT, 7)])
            quick.handle(fake.webhook_body(demand, "UPDATE"))  # takes revision 2: 2 more shipped
        return seen

    slow._read = read_then_the_other_process_goes_first  # type: ignore[method-assign]
    slow.handle(fake.webhook_body(demand, "UPDATE"))
    # The demand's next notification, on either process, finds it as recorded.
    assert quick.handle(fake.webhook_body(demand, "UPDATE")) == 0
    assert slow.handle(fake.webhook_body(demand, "UPDATE")) == 0

    assert on_hand(ledger, "shop-1", "SKU-1") == [10 - 7]
    assert revision_of(recorder, demand) == (2, "[]")


def test_a_demand_whose_revision_is_always_taken_first_goes_back_to_the_inbox_unrecorded(
    moysklad_account, recorder, mappings, ledger, record
):
    fake, server = moysklad_account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-1", 100)))
    slow, quick = two_processes(server, recorder, mappings, ledger)
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 1)])
    quick.handle(fake.webhook_body(demand, "CREATE"))
    read = slow._read
    races = 0

    def read_and_lose_the_race(href: str) -> Any:
        nonlocal races
        races += 1
        fake.update_demand(demand, positions=[(VARIANT, 1 + races)])
        seen = read(href)
        fake.update_demand(demand, positions=[(VARIANT, 20 + races)])
        quick.handle(fake.webhook_body(demand, "UPDATE"))
        return seen

    slow._read = read_and_lose_the_race  # type: ignore[method-assign]
    with pytest.raises(TargetUnavailable, match="took its next revision"):
        slow.handle(fake.webhook_body(demand, "UPDATE"))

    assert races == REVISION_RACES_MAX
    assert on_hand(ledger, "shop-1", "SKU-1") == [100 - (20 + races)]  # the quick one's readings only


class LedgerAway:
    def record(self, events: list[Any]) -> list[Any]:
        raise SinkError("the ledger did not answer")


def test_clearing_one_revisions_pending_events_leaves_a_later_revisions_alone(
    moysklad_account, recorder, mappings, ledger, record
):
    fake, server = moysklad_account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-1", 10)))
    late, quick = two_processes(server, recorder, mappings, ledger)
    demand = fake.add_demand(STORE_UUID, [(VARIANT, 5)])
    quick.handle(fake.webhook_body(demand, "CREATE"))  # revision 1, submitted
    fake.update_demand(demand, positions=[(VARIANT, 6)])
    away = DemandSync(recorder, mappings, client_for(server), LedgerAway())
    with pytest.raises(SinkError):
        away.handle(fake.webhook_body(demand, "UPDATE"))  # revision 2 stored, its events pending
    assert revision_of(recorder, demand)[0] == 2

    late._submit(demand, 1, [])  # a process done with revision 1's pending events, late

    assert revision_of(recorder, demand)[1] != "[]"  # revision 2's are still there
    assert quick.handle(fake.webhook_body(demand, "UPDATE")) == 1  # and go first, next time
    assert on_hand(ledger, "shop-1", "SKU-1") == [10 - 6]
