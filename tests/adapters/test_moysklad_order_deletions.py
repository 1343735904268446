"""A customer order the ledger made, deleted in MoySklad, releases what its reservations still hold
(its notification carries only its href: the book of the orders the ledger made names the
reservations it carried), once, by notification or, when that was lost, by the audit's catch-up;
never a reservation another order carries, nothing without the `released` row, nothing for an
order the ledger did not make (adapters/moysklad_order_ends.py, moysklad_order_book.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import BOTH_DATABASES, FAST, either_database, event
from moysklad_setup import OTHER_STORE_UUID, client_for
from placed_orders import CANCELLED, order_ends_of, order_of_two_stores_sharing_one, placed_order, reserved

from adapters import moysklad_order_book, moysklad_orders
from adapters.db import transaction
from adapters.moysklad_audit import SETTLE_S
from adapters.moysklad_catchup import MoySkladCatchUp
from adapters.moysklad_demands import DemandSync
from adapters.moysklad_order_book import BookedReservation, booked_reservations, mark_deleted, remember_order
from adapters.moysklad_order_ends import OrderEnds
from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.moysklad_webhooks import register_webhooks
from adapters.outbound import OutboundWorker
from adapters.sink import LedgerSink
from devtools.fakes.moysklad_wire import MOSCOW
from ledger.domain.model import EventType
from ledger.projections.queries import HistoryFilter

RESERVATION, RELEASE = EventType.RESERVATION, EventType.RESERVATION_RELEASE
SETTLED = timedelta(seconds=SETTLE_S + 5)  # a clock this far ahead sees a change just made


database_url = pytest.fixture(params=BOTH_DATABASES)(either_database)  # every test on both


@pytest.fixture
def account(moysklad_account: Any, mapped: Any) -> Any:
    mapped(("moysklad", "status", "released", CANCELLED))
    return moysklad_account


def deleted(fake: Any, order_id: str, at: datetime | None = None) -> dict[str, Any]:
    """The notification of the order's deletion, made at `at` (now if not given)."""
    body = fake.notification_body("customerorder", order_id, "DELETE")
    body["auditContext"]["moment"] = (
        (at or datetime.now(UTC)).astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M:%S")
    )
    return body


def releases(ledger: Any) -> list[dict[str, Any]]:
    """The release entries at shop-1."""
    ledger.refresh()
    return [row for row in ledger.history(HistoryFilter("shop-1"), 1000) if row["type"] == RELEASE.value]


def release_reference(ledger: Any, reservation_id: str) -> str:
    (row,) = [row for row in releases(ledger) if row["reservation_id"] == reservation_id]
    return str(row["reference"])


def test_an_order_deleted_in_moysklad_releases_its_reservation_once(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    assert booked_reservations(recorder, order_id) == [BookedReservation("shop-1", "B-9", "res-9")]
    register_webhooks(client_for(server), "http://ledger.example/moysklad/webhook/s")
    cancels = order_ends_of(server, recorder, mappings, ledger)
    requests = fake.requests

    fake.delete_order(order_id)  # a person, in the app
    ((_, notice),) = fake.outbox
    assert cancels.handle(notice) == 1
    assert reserved(ledger) == 0
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert "deleted" in release_reference(ledger, "res-9")
    # A cancel's id: an order cancelled and deleted at once (its two notifications handled side
    # by side) is released once.
    assert [row["event_id"] for row in releases(ledger)] == [f"customerorder:{order_id}:res-9:release"]
    assert fake.requests == requests  # the order is gone: nothing read

    assert cancels.handle(notice) == 0  # delivered again
    assert order_ends_of(server, recorder, mappings, ledger).handle(notice) == 0  # another process
    assert reserved(ledger) == 0


def test_a_deletion_without_the_row_or_of_an_order_the_ledger_did_not_make_releases_nothing(
    account, recorder, mappings, mapped, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    cancels = order_ends_of(server, recorder, mappings, ledger)

    assert cancels.handle(deleted(fake, "0dd00000-0000-0000-0000-000000000001")) == 0  # not in the book
    with transaction(recorder) as tx:
        tx.execute("DELETE FROM adapter_status_map WHERE system = %s", ("moysklad",))
    fake.delete_order(order_id)
    assert cancels.handle(deleted(fake, order_id)) == 0  # no `released` row: MoySklad may not release
    assert reserved(ledger) == 5


def test_a_deletion_does_not_release_a_reservation_placed_after_it(
    account, recorder, mappings, ledger, record
):
    """The order id placed again after its order was deleted makes a new order; the first order's
    deletion, notified late, releases the first reservation only."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    fake.delete_order(order_id)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    (new_order,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-9"]
    assert new_order != order_id
    assert booked_reservations(recorder, new_order) == [BookedReservation("shop-1", "B-9", "res-9b")]

    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, order_id)) == 1
    assert reserved(ledger) == 2  # res-9 released, res-9b holds
    assert ledger.reservation("shop-1", "res-9b").reservation.status.value == "active"


def test_a_later_reservation_reusing_the_order_is_booked_and_released_with_it(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()  # the order found by its code and reused
    assert [r.reservation_id for r in booked_reservations(recorder, order_id)] == ["res-9", "res-9b"]

    fake.delete_order(order_id)
    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, order_id)) == 2
    assert reserved(ledger) == 0


def test_an_order_made_before_the_book_releases_only_what_was_pushed_to_it_since(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    with transaction(recorder) as tx:  # as a release before the book made it
        tx.execute("DELETE FROM adapter_moysklad_booked_reservations")
        tx.execute("DELETE FROM adapter_moysklad_order_reservations")
        tx.execute("DELETE FROM adapter_moysklad_orders")
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()

    fake.delete_order(order_id)
    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, order_id)) == 1
    assert ledger.reservation("shop-1", "res-9b").reservation.status.value == "released"
    assert reserved(ledger) == 5  # res-9, pushed before the book, is not known to be this order's


def test_a_deletion_leaves_what_another_live_order_of_the_same_order_id_carries(
    account, recorder, mappings, ledger, record
):
    """An order id can have two live orders at one store: a person took the first out of the
    lookup (changed its store or code, put it in the recycle bin), and the next reservation made a
    new one. Deleting the first later ends only its own reservations."""
    fake, server = account
    first, orders = placed_order(fake, server, recorder, mappings, record)
    fake.orders[first]["externalCode"] = "B-9-old"  # a person renames its code
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    (second,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-9"]
    assert second != first

    fake.delete_order(first)
    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, first)) == 1
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert ledger.reservation("shop-1", "res-9b").reservation.status.value == "active"


def test_a_deletion_notified_without_its_moment_is_followed(account, recorder, mappings, ledger, record):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.delete_order(order_id)
    notice = deleted(fake, order_id)
    del notice["auditContext"]  # the page does not mark it required

    assert order_ends_of(server, recorder, mappings, ledger).handle(notice) == 1
    assert reserved(ledger) == 0


class Crash(BaseException):
    """The process dies here."""


def test_an_order_deleted_before_its_push_was_saved_is_made_again_and_followed_then(
    account, recorder, mappings, ledger, record, monkeypatch
):
    """The order made, and the process gone before the book had it; a person deletes it before the
    push is tried again. The deletion cannot be traced (the units stay reserved), but nothing
    drifts: the retry finds no order and makes it again, booked, so MoySklad reserves what the
    ledger holds, and deleting that one releases."""
    fake, server = account
    record(
        event(EventType.RECEIPT, "shop-1", ("SKU-1", 10)),
        event(RESERVATION, "shop-1", ("SKU-1", 5), reservation_id="res-9", order_id="B-9"),
    )

    def crash(*_: Any) -> None:
        raise Crash()

    monkeypatch.setattr(moysklad_orders, "remember_order", crash)
    with pytest.raises(Crash):
        OutboundWorker(
            recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST
        ).run_until_idle()
    monkeypatch.undo()
    (first,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-9"]
    fake.delete_order(first)
    cancels = order_ends_of(server, recorder, mappings, ledger)
    assert cancels.handle(deleted(fake, first)) == 0 and reserved(ledger) == 5

    with transaction(recorder) as tx:  # the dead process's lease
        tx.execute("UPDATE adapter_positions SET lease_owner = NULL, lease_until = NULL")
    OutboundWorker(
        recorder, MoySkladOrdersTarget(recorder, mappings, client_for(server)), FAST
    ).run_until_idle()
    (again,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-9"]
    assert again != first and [p["reserve"] for p in fake.orders[again]["positions"]] == [5]

    fake.delete_order(again)
    assert cancels.handle(deleted(fake, again)) == 1 and reserved(ledger) == 0


def test_an_order_cancelled_then_deleted_is_released_once(account, recorder, mappings, ledger, record):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    register_webhooks(client_for(server), "http://ledger.example/moysklad/webhook/s")
    cancels = order_ends_of(server, recorder, mappings, ledger)
    fake.set_order_state(order_id, CANCELLED)
    ((_, cancel),) = fake.outbox
    assert cancels.handle(cancel) == 1
    fake.delete_order(order_id)
    (_, deletion) = fake.outbox[-1]
    assert cancels.handle(deletion) == 0  # nothing holds any more
    assert len(releases(ledger)) == 1


def test_a_deletion_whose_notification_was_lost_is_read_from_the_audit_once(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    order_id, _ = placed_order(fake, server, recorder, mappings, record)
    fake.delete_order(order_id)
    client = client_for(server)
    sink = LedgerSink(ledger)
    catching_up = MoySkladCatchUp(
        recorder,
        client,
        DemandSync(recorder, mappings, client, sink),
        OrderEnds(recorder, mappings, client, sink),
        clock=lambda: datetime.now(UTC) + SETTLED,
    )

    assert catching_up.run_once() == 1
    assert reserved(ledger) == 0
    assert "deleted" in release_reference(ledger, "res-9")
    assert catching_up.run_once() == 0  # the overlap reads it again: nothing more


def test_an_order_the_ledger_closed_and_a_later_reservation_reused_releases_nothing_when_deleted(
    account, recorder, mappings, ledger, record
):
    """res-9 released, its order closed; res-9b of the order id reuses the closed order (an alert
    asks a person to reopen it), which reserves nothing for it: deleting that order frees nothing
    in MoySklad, and res-9b keeps its units."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    record(event(RELEASE, "shop-1", reservation_id="res-9", order_id="B-9"))
    orders.run_until_idle()
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()
    assert [r.reservation_id for r in booked_reservations(recorder, order_id)] == ["res-9"]

    fake.delete_order(order_id)
    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, order_id)) == 0
    assert ledger.reservation("shop-1", "res-9b").reservation.status.value == "active"


def test_a_deletion_releases_each_booked_reservation_at_its_own_store(
    account, recorder, mappings, ledger, record
):
    """A person moves the order to shop-2's store; the next reservation of B-9 at shop-2 finds it
    there and is booked with its own store."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    fake.orders[order_id]["store"] = client_for(server).meta("store", OTHER_STORE_UUID)
    record(
        event(EventType.RECEIPT, "shop-2", ("SKU-1", 10)),
        event(RESERVATION, "shop-2", ("SKU-1", 3), reservation_id="res-9c", order_id="B-9"),
    )
    orders.run_until_idle()

    fake.delete_order(order_id)
    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, order_id)) == 2
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert ledger.reservation("shop-2", "res-9c").reservation.status.value == "released"


def test_a_deletion_releases_both_parts_at_a_shared_store_when_they_share_their_reservation_id(
    account, recorder, mappings, ledger, record
):
    """shop-3 mapped to shop-1's MoySklad store (as an older release let be): B-9's res-9 at both
    stores is pushed to the one customer order. The book was keyed by (order, reservation), so
    shop-3's res-9 was never booked, and the order's deletion left its units reserved for good."""
    fake, server = account
    order_id, _ = order_of_two_stores_sharing_one(
        fake, server, recorder, mappings, record, shop_3_reservation="res-9"
    )
    assert {(r.store_id, r.reservation_id) for r in booked_reservations(recorder, order_id)} == {
        ("shop-1", "res-9"),
        ("shop-3", "res-9"),
    }

    fake.delete_order(order_id)
    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, order_id)) == 2
    assert ledger.reservation("shop-1", "res-9").reservation.status.value == "released"
    assert ledger.reservation("shop-3", "res-9").reservation.status.value == "released"


def test_a_deletion_handled_while_a_push_books_under_the_order_is_never_lost(
    account, recorder, mappings, ledger, record, monkeypatch
):
    """The inbox handles the order's deletion after a push found the order and before it booked
    res-9b under it: the push sees the deletion, tries again and makes a new order for res-9b, so
    MoySklad reserves what the ledger holds."""
    fake, server = account
    order_id, orders = placed_order(fake, server, recorder, mappings, record)
    cancels = order_ends_of(server, recorder, mappings, ledger)
    book = moysklad_orders.remember_order

    def deleted_meanwhile(rec: Any, uuid: str, carried: Any) -> bool:
        if carried.reservation_id == "res-9b" and uuid == order_id:
            fake.delete_order(uuid)  # a person, right after the lookup answered
            assert cancels.handle(deleted(fake, uuid)) == 1  # the inbox: res-9, booked, released
        return book(rec, uuid, carried)

    monkeypatch.setattr(moysklad_orders, "remember_order", deleted_meanwhile)
    record(event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-9b", order_id="B-9"))
    orders.run_until_idle()

    (again,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-9"]
    assert again != order_id and [p["reserve"] for p in fake.orders[again]["positions"]] == [2]
    assert [r.reservation_id for r in booked_reservations(recorder, again)] == ["res-9b"]
    assert reserved(ledger) == 2


def test_a_booking_waits_for_a_deletion_of_the_same_order_in_flight(recorder):
    """The book's rule on PostgreSQL's concurrent transactions (SQLite has one writer): a deletion
    and a booking of one order take the order's row one after the other, so the booking sees the
    deletion once it commits, and books nothing."""
    remember_order(recorder, "order-1", BookedReservation("shop-1", "B-1", "res-1"))
    outcome: list[bool] = []
    booking = threading.Thread(
        target=lambda: outcome.append(
            remember_order(recorder, "order-1", BookedReservation("shop-1", "B-1", "res-2"))
        )
    )
    with transaction(recorder) as tx:  # a deletion in flight: its row taken, not committed yet
        tx.execute(
            "UPDATE adapter_moysklad_orders SET deleted_at = %s WHERE order_uuid = %s", ("now", "order-1")
        )
        booking.start()
        booking.join(0.5)
        assert booking.is_alive()  # waits for the deletion's transaction
    booking.join(10.0)
    assert outcome == [False]
    assert [r.reservation_id for r in booked_reservations(recorder, "order-1")] == ["res-1"]


def test_a_deletion_waits_for_a_booking_of_the_same_order_in_flight_and_sees_it(recorder):
    """The other way round: a booking in flight holds the order's row; the deletion waits for it,
    then reads the reservation it booked (read first, it would miss it, and the push count as
    done under a gone order)."""
    seen: list[list[BookedReservation]] = []
    deletion = threading.Thread(target=lambda: seen.append(mark_deleted(recorder, "order-2")))
    with transaction(recorder) as tx:  # a booking in flight of a new order
        tx.execute(
            "INSERT INTO adapter_moysklad_orders (order_uuid, deleted_at, recorded_at) VALUES (%s, NULL, %s)",
            ("order-2", "now"),
        )
        tx.execute(
            "INSERT INTO adapter_moysklad_order_reservations (order_uuid, reservation_id, store_id, "
            "order_id, recorded_at) VALUES (%s, %s, %s, %s, %s)",
            ("order-2", "res-1", "shop-1", "B-2", "now"),
        )
        deletion.start()
        deletion.join(0.5)
        assert deletion.is_alive()  # waits for the booking's transaction
    deletion.join(10.0)
    assert seen == [[BookedReservation("shop-1", "B-2", "res-1")]]


def test_the_book_lets_go_of_orders_whose_reservations_all_ended_and_keeps_every_open_one(
    account, recorder, mappings, ledger, record, monkeypatch
):
    """The book grew by every order the ledger made, for ever. An order whose reservations all
    ended (a deletion would release nothing) leaves it after the retention; an open one stays, so
    its deletion still releases what it carries."""
    monkeypatch.setattr(moysklad_order_book, "RETENTION_DAYS", 0)  # every ended order is past it
    monkeypatch.setattr(moysklad_order_book, "PRUNE_INTERVAL_S", 0.0)
    fake, server = account
    ended, orders = placed_order(fake, server, recorder, mappings, record)
    record(
        event(RELEASE, "shop-1", reservation_id="res-9"),
        event(RESERVATION, "shop-1", ("SKU-1", 2), reservation_id="res-10", order_id="B-10"),
    )
    orders.run_until_idle()
    (still_open,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-10"]
    orders.run_until_idle()
    record(event(RESERVATION, "shop-1", ("SKU-1", 1), reservation_id="res-11", order_id="B-11"))
    orders.run_until_idle()  # a push after the retention passed prunes the book

    assert booked_reservations(recorder, ended) == []
    with transaction(recorder) as tx:
        assert (
            tx.fetchone("SELECT 1 AS kept FROM adapter_moysklad_orders WHERE order_uuid = %s", (ended,))
            is None
        )
    assert booked_reservations(recorder, still_open) == [BookedReservation("shop-1", "B-10", "res-10")]

    fake.delete_order(still_open)
    assert order_ends_of(server, recorder, mappings, ledger).handle(deleted(fake, still_open)) == 1
    assert ledger.reservation("shop-1", "res-10").reservation.status.value == "released"
