"""MoySklad's deleted demands read from its audit (adapters/moysklad_deletions.py): a deletion whose
notification was lost returns the demand's stock, once; the audit is read in windows that each
move the cursor when read in full, a window too full is given up with an alert rather than held
for good, and a clock running ahead of MoySklad's by up to SETTLE_S + OVERLAP_S loses nothing."""

from __future__ import annotations

import itertools
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import event

from adapters import moysklad_audit, moysklad_deletions
from adapters.cursors import load_cursor, save_cursor
from adapters.db import transaction
from adapters.moysklad import MoySkladClient, MoySkladConfig
from adapters.moysklad_audit import SETTLE_S, WINDOW_S, Change
from adapters.moysklad_catchup import MoySkladCatchUp
from adapters.moysklad_deletions import CURSOR, deleted_demands
from adapters.moysklad_demands import DemandSync
from adapters.outbound import TargetUnavailable
from adapters.sink import LedgerSink
from ledger.domain.model import EventType

STORE_UUID = "7a1f0000-0000-0000-0000-000000000001"
PRODUCT = "0b3c0000-0000-0000-0000-0000000000b2"
SETTLED = timedelta(seconds=SETTLE_S + 5)  # a clock this far ahead sees a deletion just made


@pytest.fixture
def account(moysklad: Any, mapped: Any) -> Any:
    fake, _ = moysklad
    fake.stores.add(STORE_UUID)
    fake.products.update({PRODUCT: "product"})
    mapped(("moysklad", "store", "shop-1", STORE_UUID), ("moysklad", "sku", "SKU-2", PRODUCT, "product"))
    return moysklad


def client_of(server: Any) -> MoySkladClient:
    return MoySkladClient(
        MoySkladConfig(base_url=server.url + "/api/remap/1.2", token="fake-moysklad-token", timeout_s=2.0)
    )


def catch_up(
    server: Any, recorder: Any, mappings: Any, ledger: Any, ahead: timedelta = SETTLED
) -> MoySkladCatchUp:
    client = client_of(server)
    catching_up = MoySkladCatchUp(
        recorder, client, DemandSync(recorder, mappings, client, LedgerSink(ledger))
    )
    catching_up.clock = lambda: datetime.now(UTC) + ahead
    return catching_up


def on_hand(ledger: Any) -> int:
    return ledger.levels("shop-1", ["SKU-2"])[0].level.on_hand_units


def test_a_demand_deleted_while_its_notification_was_lost_returns_its_stock_once(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    kept, deleted = fake.add_demand(STORE_UUID, [(PRODUCT, 1)]), fake.add_demand(STORE_UUID, [(PRODUCT, 4)])
    fake.outbox.clear()
    catching_up = catch_up(server, recorder, mappings, ledger)
    assert catching_up.run_once() == 2
    assert on_hand(ledger) == 5

    fake.delete_demand(deleted)
    fake.outbox.clear()  # the DELETE notification, lost
    assert catching_up.run_once() == 1
    assert on_hand(ledger) == 9
    assert catching_up.run_once() == 0  # the same deletion read again: nothing returned twice
    assert on_hand(ledger) == 9
    assert kept in fake.demands


def test_a_deletion_just_made_waits_for_the_window_to_settle(account, recorder, mappings, ledger, record):
    """The window ends SETTLE_S before now: an audit row written late, or MoySklad's clock behind
    ours, is still inside the next window."""
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 3)])
    catching_up = catch_up(server, recorder, mappings, ledger, ahead=timedelta(0))
    assert catching_up.run_once() == 1
    fake.delete_demand(demand)
    fake.outbox.clear()
    assert catching_up.run_once() == 0  # not settled yet
    catching_up.clock = lambda: datetime.now(UTC) + SETTLED
    assert catching_up.run_once() == 1
    assert on_hand(ledger) == 10


def test_a_clock_ahead_of_moysklads_loses_no_deletion(account, recorder, mappings, ledger, record):
    """The window's end and the cursor are this host's clock; the audit's moments MoySklad's. Ahead
    by almost SETTLE_S + OVERLAP_S, a deletion made just after a catch-up is still read."""
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 3)])
    catching_up = catch_up(server, recorder, mappings, ledger, ahead=timedelta(seconds=115))
    assert catching_up.run_once() == 1
    fake.delete_demand(demand)
    fake.outbox.clear()
    assert catching_up.run_once() == 1
    assert on_hand(ledger) == 10


def test_the_deletions_are_read_from_every_page_of_the_audit_and_only_demands_deleted(account):
    fake, server = account
    start = datetime.now(UTC) - timedelta(seconds=5)
    made = [fake.add_demand(STORE_UUID, [(PRODUCT, 1)]) for _ in range(5)]
    for demand_id in made:
        fake.delete_demand(demand_id)
    fake.update_demand(fake.add_demand(STORE_UUID, [(PRODUCT, 1)]), positions=[(PRODUCT, 2)])

    read = list(
        deleted_demands(client_of(server), start, datetime.now(UTC) + timedelta(seconds=1), page_rows=2)
    )

    assert all(isinstance(found, Change) for found in read)
    assert sorted(found.href.rsplit("/", 1)[-1] for found in read) == sorted(made)  # type: ignore[union-attr]
    assert all(abs(found.moment - datetime.now(UTC)) < timedelta(minutes=1) for found in read)  # type: ignore[union-attr]
    assert len(fake.audit) == 12  # 6 made, 5 deleted, 1 corrected: the audit holds every change
    paged = [path for _, path, _ in fake.request_log if path.endswith("/audit")]
    assert len(paged) == 3  # 5 contexts of deletions, 2 a page


def test_a_long_outage_is_read_a_window_at_a_time_each_moving_the_cursor(account, recorder, mappings, ledger):
    _, server = account
    catching_up = catch_up(server, recorder, mappings, ledger)
    now = datetime.now(UTC)
    save_cursor(recorder, CURSOR, now - timedelta(hours=2))
    asked: list[datetime | None] = []

    def stopping() -> bool:
        asked.append(load_cursor(recorder, CURSOR))
        return len(asked) > 3  # stopped after three windows

    catching_up.deletions.run_once(stopping)
    cursors = [cursor for cursor in asked if cursor is not None]
    assert [b - a for a, b in itertools.pairwise(cursors)] == [timedelta(seconds=WINDOW_S)] * 3
    catching_up.deletions.run_once()
    end = load_cursor(recorder, CURSOR)
    assert end is not None and abs(
        end - (datetime.now(UTC) + SETTLED - timedelta(seconds=SETTLE_S))
    ) < timedelta(seconds=5)


def test_a_window_too_full_to_read_is_given_up_with_an_alert_not_held_for_good(
    account, recorder, mappings, ledger, record, monkeypatch
):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    monkeypatch.setattr(moysklad_audit, "AUDIT_PAGES_MAX", 1)
    monkeypatch.setattr(moysklad_audit, "AUDIT_PAGE_ROWS", 2)
    monkeypatch.setattr(moysklad_deletions.deleted_demands, "__defaults__", (2,))
    for _ in range(3):
        fake.delete_demand(fake.add_demand(STORE_UUID, [(PRODUCT, 1)]))
    fake.outbox.clear()
    catching_up = catch_up(server, recorder, mappings, ledger)
    ahead = [SETTLED]
    catching_up.clock = lambda: datetime.now(UTC) + ahead[0]

    catching_up.run_once()
    said = _alerts(recorder)
    assert len(said) == 1 and "demand deletions" in said[0]["subject"], said
    assert "reconcile" in said[0]["detail"]
    cursor = load_cursor(recorder, CURSOR)
    assert cursor is not None and cursor > datetime.now(UTC)  # moved past: the clock is ahead
    for _ in range(2):  # the next windows start past the deletions' overlap: no alert after them
        ahead[0] += timedelta(minutes=3)
        catching_up.run_once()
    assert len(_alerts(recorder)) <= 2
    before = len(_alerts(recorder))
    ahead[0] += timedelta(minutes=3)
    catching_up.run_once()
    assert len(_alerts(recorder)) == before


def test_a_deletion_read_while_the_catch_up_is_stopped_is_read_again_by_the_next(
    account, recorder, mappings, ledger, record
):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    demand = fake.add_demand(STORE_UUID, [(PRODUCT, 3)])
    catching_up = catch_up(server, recorder, mappings, ledger)
    assert catching_up.run_once() == 1
    fake.delete_demand(demand)
    fake.outbox.clear()
    asked = iter([False, False, True])  # before the deletions, before the window, at the deletion
    assert catching_up.run_once(lambda: next(asked, True)) == 0
    assert on_hand(ledger) == 7
    assert catching_up.run_once() == 1
    assert on_hand(ledger) == 10


def test_without_the_right_to_view_the_audit_the_catch_up_says_so(account, recorder, mappings, ledger):
    fake, server = account
    from adapters.httpserver import Reply

    fake.next_replies.append(Reply(403, {"errors": [{"error": "Нет прав", "code": 1016}]}))
    with pytest.raises(Exception, match="right to view the audit"):
        catch_up(server, recorder, mappings, ledger).deletions.run_once()


def test_the_fake_audit_keeps_the_documented_filters_and_page_sizes(account):
    fake, server = account
    fake.add_demand(STORE_UUID, [(PRODUCT, 1)])
    base = server.url + "/api/remap/1.2/audit"
    headers = {"Authorization": "Bearer fake-moysklad-token", "Accept-Encoding": "gzip"}

    def status(query: str) -> int:
        request = urllib.request.Request(base + urllib.parse.quote(query, safe="?=&;"), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as refused:
            return refused.code

    assert status("") == 200
    assert status("?filter=moment>=2026-12-01 10:00:00;entityType=demand;eventType=delete") == 200
    assert status("?filter=moment>2026-12-01 10:00:00") == 400  # only >= and <= are allowed
    assert status("?filter=eventType=deleted") == 400
    assert status("?limit=100") == 200
    assert status("?limit=101") == 400


def _deleted_three(fake: Any, catching_up: MoySkladCatchUp) -> list[str]:
    made = [fake.add_demand(STORE_UUID, [(PRODUCT, 1)]) for _ in range(3)]
    assert catching_up.run_once() == 3
    for demand_id in made:
        fake.delete_demand(demand_id)
    fake.outbox.clear()
    return made


def _failing(message: str) -> Any:
    """A stand-in for a read of MoySklad that is unavailable, saying `message`."""

    def fail(*_: Any, **__: Any) -> Any:
        raise TargetUnavailable(message)

    return fail


def _alerts(recorder: Any) -> list[Any]:
    with transaction(recorder) as tx:
        return list(tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'"))


def test_a_bulk_deletion_too_large_to_read_is_alerted_and_the_windows_other_deletions_are_read(
    account, recorder, mappings, ledger, record, monkeypatch
):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    catching_up = catch_up(server, recorder, mappings, ledger)
    _deleted_three(fake, catching_up)
    monkeypatch.setattr(moysklad_audit, "AUDIT_PAGES_MAX", 2)
    monkeypatch.setattr(moysklad_deletions.deleted_demands, "__defaults__", (2,))
    bulk = next(c for c in fake.audit if c["eventType"] == "delete")
    others = []  # four more deletions in the same context, of demands never recorded, listed first
    for n in range(4):
        other = dict(bulk["_events"][0])
        other["entity"] = fake.meta("demand", f"0d0d0000-0000-0000-0000-{n:012d}")
        others.append(other)
    bulk["_events"] = others + bulk["_events"]  # 5 events: more than 2 pages of 2

    assert catching_up.run_once() == 2  # the other two deletions, read
    assert on_hand(ledger) == 9
    [alert] = _alerts(recorder)
    assert alert["subject"].startswith(f"audit context {bulk['id']}") and "not read" in alert["detail"]
    catching_up.run_once()
    assert len(_alerts(recorder)) == 1  # read again in the overlap: not said again


def test_an_audit_row_without_its_moment_is_alerted_and_passed(account, recorder, mappings, ledger, record):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    catching_up = catch_up(server, recorder, mappings, ledger)
    _deleted_three(fake, catching_up)
    broken = next(c for c in fake.audit if c["eventType"] == "delete")
    del broken["_events"][0]["moment"]

    assert catching_up.run_once() == 2
    [alert] = _alerts(recorder)
    assert "without its demand's address or moment" in alert["detail"]


def test_the_deletions_are_read_though_the_demands_list_failed(account, recorder, mappings, ledger, record):
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    catching_up = catch_up(server, recorder, mappings, ledger)
    _deleted_three(fake, catching_up)

    catching_up.client.demands_updated_since = _failing(  # type: ignore[method-assign]
        "moysklad demand list: more than 1000 in one second"
    )
    with pytest.raises(TargetUnavailable, match="more than 1000"):
        catching_up.run_once()
    assert on_hand(ledger) == 10  # the deletions returned their stock all the same


def test_when_the_list_and_the_deletions_both_fail_the_lists_error_is_raised_and_the_other_said(
    account, recorder, mappings, ledger, caplog
):
    _, server = account
    catching_up = catch_up(server, recorder, mappings, ledger)

    catching_up.client.demands_updated_since = _failing("moysklad demand list: HTTP 502")  # type: ignore[method-assign]
    catching_up.deletions.run_once = _failing("moysklad audit: HTTP 403: the token may lack the right")  # type: ignore[method-assign]
    with pytest.raises(TargetUnavailable, match="HTTP 502"):
        catching_up.run_once()
    assert "the deletions could not be read either" in caplog.text and "HTTP 403" in caplog.text


@pytest.mark.parametrize("ahead", [timedelta(days=2), timedelta(minutes=5)])
def test_a_cursor_ahead_of_the_clock_is_alerted_and_the_audit_read_again(
    account, recorder, mappings, ledger, record, ahead
):
    """Five minutes is enough to lose deletions: the next window would start past them."""
    fake, server = account
    record(event(EventType.RECEIPT, "shop-1", ("SKU-2", 10)))
    catching_up = catch_up(server, recorder, mappings, ledger)
    _deleted_three(fake, catching_up)
    save_cursor(recorder, CURSOR, datetime.now(UTC) + ahead)  # the clock was set back since

    assert catching_up.run_once() == 3
    [alert] = _alerts(recorder)
    assert "ahead of this host's clock" in alert["detail"]
