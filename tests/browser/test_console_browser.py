"""The console in a real browser (issue #13, item 8): find a SKU, its timeline's plot holds every
point the API gives, the explanation's numbers are the API's, a reader is offered no write, and
no request leaves 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from browser_support import plugged_in_adapters
from support import api
from support import events as ev
from support.access import bearer, new_token, wait_until_taken
from support.ids import unique
from support.server import LedgerServer

from adapters.db import open_database, transaction

WAIT_MS = 10_000  # the longest any page, plot or click may take


@dataclass
class Shop:
    server: LedgerServer
    admin: httpx.Client
    reader: str
    store: str
    other: str
    prefix: str
    sku: str


def _adapter_rows(database_url: str) -> None:
    """One push target that has pushed nothing yet, with a parked item and an error."""
    recorder = open_database(database_url, 2, 10)
    try:
        with transaction(recorder) as tx:
            tx.execute(
                "INSERT INTO adapter_positions (adapter, position, pushed_total, failures_total, "
                "parked_total, last_error, last_push_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                ("bitrix", 0, 0, 1, 1, "503 Service Unavailable", None, "now"),
            )
            tx.execute(
                "INSERT INTO adapter_parked (adapter, item_key, position, reason, attempts, payload, "
                "parked_at, retry_requested) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                ("bitrix", "TEA", 1, "refused", 5, "{}", "now", 0),
            )
    finally:
        recorder.close()


@pytest.fixture(scope="module")
def shop(module_serve: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    folder = tmp_path_factory.mktemp("console")
    database_url = f"sqlite:///{folder / 'ledger.db'}"
    admin_token = new_token(database_url, "admin", "admin")
    reader = new_token(database_url, "auditor", "reader")
    _adapter_rows(database_url)
    server = module_serve(database_url, plugged_in_adapters(folder / "plugins"))
    store, other, prefix = unique("shop"), unique("wh"), unique("TEA").upper()
    sku = f"{prefix}-GREEN"
    soon = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()
    steps = [
        ev.envelope("stock.receipt", store, {"lines": ev.lines((sku, 40)), "reference": "PO-1"}),
        ev.envelope("stock.receipt", other, {"lines": ev.lines((sku, 15), (f"{prefix}-BLACK", 3))}),
        ev.envelope("stock.reservation", store, {"lines": ev.lines((sku, 5)), "reservation_id": "R-1"}),
        ev.envelope("stock.pos_sale", store, {"lines": ev.lines((sku, 3))}, source="pos/till-2"),
        ev.envelope("stock.count", store, {"lines": ev.lines((sku, 30)), "reference": "count 12"}),
        ev.envelope(
            "stock.reservation",
            store,
            {"lines": ev.lines((sku, 2)), "reservation_id": "R-2", "order_id": "o-2", "expires_at": soon},
        ),
        ev.envelope("stock.sale", store, {"lines": ev.lines((sku, 4)), "order_id": "o-3"}),
    ]
    with server.client() as admin:
        admin.headers.update(bearer(admin_token))
        wait_until_taken(server.url, admin_token)
        wait_until_taken(server.url, reader)
        for step in steps:
            api.record(admin, step)
        yield Shop(server, admin, reader, store, other, prefix, sku)


@pytest.fixture
def page(chromium: Any, shop: Shop) -> Iterator[Any]:
    """A logged-in reader's tab. Every request it sends is kept, and checked to stay on 127.0.0.1."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    sent: list[tuple[str, str]] = []
    context.on("request", lambda request: sent.append((request.method, request.url)))
    tab = context.new_page()
    tab.goto(f"{shop.server.url}/ui")
    tab.fill("#token", shop.reader)
    tab.click("button[type=submit]")
    tab.wait_for_selector("#q")  # the search box: logged in (the login form is at /ui too)
    try:
        yield tab
    finally:
        context.close()
        assert sent, "the browser sent nothing"
        assert {urlsplit(url).hostname for _, url in sent} == {"127.0.0.1"}, sent


def test_find_a_sku_open_its_timeline_and_the_plot_has_every_point(page: Any, shop: Shop) -> None:
    page.fill("#q", shop.prefix)
    page.press("#q", "Enter")
    page.click(f"#found a:text-is('{shop.sku}')")
    assert page.text_content("#total [data-figure=on_hand]") == str(30 - 4 + 15)
    page.click(f"#levels a:text-is('{shop.store}')")
    page.wait_for_function("document.getElementById('plot').dataset.points > 0")
    timeline = shop.admin.get(f"/v1/stores/{shop.store}/stock/{shop.sku}/timeline").json()["points"]
    assert int(page.get_attribute("#plot", "data-points")) == len(timeline) == 6
    assert page.locator("#entries tbody tr").count() == len(timeline)
    # Pointing at the plot names an entry: its type, source, reference and principal.
    page.locator("#plot").scroll_into_view_if_needed()
    box = page.locator("#plot .u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2, steps=5)
    told = page.text_content("#point")
    assert "stock.sale" in told and "source tests/producer" in told and "principal admin" in told


def test_a_timeline_of_one_entry_spans_an_hour_not_years(page: Any, shop: Shop) -> None:
    page.goto(f"{shop.server.url}/ui/stores/{shop.other}/skus/{shop.sku}")  # its one receipt
    page.wait_for_function("document.getElementById('plot').dataset.xSpanS !== undefined")
    assert page.get_attribute("#plot", "data-points") == "1"
    assert page.get_attribute("#plot", "data-x-span-s") == "3600"
    page.goto(f"{shop.server.url}/ui/stores/{shop.store}/skus/{shop.sku}")  # six entries: their own span
    page.wait_for_function("document.getElementById('plot').dataset.xSpanS !== undefined")
    assert int(page.get_attribute("#plot", "data-x-span-s")) < 3600  # recorded seconds apart


def test_the_explanation_shows_the_apis_numbers(page: Any, shop: Shop) -> None:
    page.goto(f"{shop.server.url}/ui/stores/{shop.store}/skus/{shop.sku}")
    explain = shop.admin.get(f"/v1/stores/{shop.store}/stock/{shop.sku}/explain").json()
    shown = {
        name: int(page.text_content(f"#explain [data-explain={name}]"))
        for name in ("on_hand", "reserved", "available", "incoming", "count_qty")
    }
    assert shown == {
        "on_hand": explain["on_hand"],
        "reserved": explain["reserved"],
        "available": explain["available"],
        "incoming": explain["incoming"],
        "count_qty": explain["on_hand_from"]["count"]["qty"],
    }
    since = [int(cell) for cell in page.locator("#explain [data-explain=since_units]").all_text_contents()]
    assert since == [group["units"] for group in explain["on_hand_from"]["since"]]
    held = page.locator("#explain [data-explain=reserved_remaining]").all_text_contents()
    assert [int(cell) for cell in held] == [r["remaining"] for r in explain["reserved_by"]]
    figures = {
        name: int(page.text_content(f"#figures [data-figure={name}]")) for name in ("on_hand", "reserved")
    }
    assert figures == {"on_hand": explain["on_hand"], "reserved": explain["reserved"]}


_WRITES = """() => {
  const writes = [];
  for (const form of document.forms) if (form.method !== "get") writes.push(form.outerHTML.slice(0, 80));
  for (const el of document.querySelectorAll("button, input[type=submit]"))
    if (!el.form || el.form.method !== "get") writes.push(el.outerHTML.slice(0, 80));
  for (const el of document.querySelectorAll("[formmethod], [formaction]"))
    writes.push(el.outerHTML.slice(0, 80));
  return writes;
}"""


def test_a_reader_is_offered_no_write_action(page: Any, shop: Shop) -> None:
    before = len(page.context.pages)
    paths = [
        "/ui",
        f"/ui?q={shop.prefix}",
        f"/ui/skus/{shop.sku}",
        f"/ui/stores/{shop.store}/skus/{shop.sku}",
        f"/ui/stores/{shop.store}/reservations",
        "/ui/adapters",
    ]
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.method))
    for path in paths:
        response = page.goto(shop.server.url + path)
        assert response.status == 200, path
        assert page.evaluate(_WRITES) == [], path
    assert set(sent) == {"GET"}
    assert len(page.context.pages) == before
    # The adapters' state: the target, its lag (every entry, none pushed), its parked item, its error.
    page.goto(f"{shop.server.url}/ui/adapters")
    head = shop.admin.get("/readyz").json()["position"]
    cells = page.locator("#adapters tbody tr").first.locator("th, td").all_text_contents()
    assert cells[:4] == ["bitrix", "0", str(head), "1"]
    assert cells[-1] == "503 Service Unavailable"
    # The soon-to-expire reservation stands apart on the store's page.
    page.goto(f"{shop.server.url}/ui/stores/{shop.store}/reservations")
    assert page.locator("#soon tbody tr").count() == 1
    assert "R-2" in page.text_content("#soon")


def test_a_store_scoped_reader_sees_that_an_adapter_failed_not_its_error(shop: Shop) -> None:
    """An adapter pushes every store's entries: its error may name another store's SKU."""
    scoped = new_token(shop.server.database_url, unique("till"), "reader", stores=(shop.store,))
    wait_until_taken(shop.server.url, scoped)
    with shop.server.client() as client:
        scoped_page = client.get("/ui/adapters", headers=bearer(scoped))
        whole_page = client.get("/ui/adapters", headers=bearer(shop.reader))
    assert scoped_page.status_code == whole_page.status_code == 200
    assert "503 Service Unavailable" in whole_page.text
    assert 'id="errors-hidden"' not in whole_page.text
    assert "503 Service Unavailable" not in scoped_page.text
    assert "(hidden: this token reads only some stores)" in scoped_page.text
    assert 'id="errors-hidden"' in scoped_page.text
    assert "<th scope=\"row\">bitrix</th>" in scoped_page.text  # that it failed is still shown


def test_no_request_of_any_page_leaves_127_0_0_1(page: Any, shop: Shop) -> None:
    """Every page, with its styles, scripts and the plot: each tab's requests are also checked
    when it closes (the `page` fixture), the login's included."""
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    for path in (
        "/ui",
        f"/ui?q={shop.prefix}",
        f"/ui/skus/{shop.sku}",
        f"/ui/stores/{shop.store}/skus/{shop.sku}?axis=occurred",
        f"/ui/stores/{shop.store}/reservations",
        "/ui/adapters",
        "/ui/logout",
    ):
        page.goto(shop.server.url + path)
        page.wait_for_load_state("load")
    assert any("/ui/static/uPlot.iife.min.js" in url for url in sent), sent
    assert {urlsplit(url).hostname for url in sent} == {"127.0.0.1"}, sent


def test_on_a_tablet_a_touch_on_the_plot_names_the_entry(chromium: Any, shop: Shop) -> None:
    context = chromium.new_context(viewport={"width": 820, "height": 1180}, has_touch=True, is_mobile=True)
    context.set_default_timeout(WAIT_MS)
    sent: list[str] = []
    context.on("request", lambda request: sent.append(request.url))
    try:
        tab = context.new_page()
        tab.goto(f"{shop.server.url}/ui")
        tab.fill("#token", shop.reader)
        tab.tap("button[type=submit]")
        tab.wait_for_selector("#q")  # the search box: logged in (the login form is at /ui too)
        answer = tab.goto(f"{shop.server.url}/ui/stores/{shop.store}/skus/{shop.sku}")
        assert answer.status == 200, tab.content()[:3000]
        tab.wait_for_function("document.getElementById('plot').dataset.points > 0")
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
        tab.locator("#plot").scroll_into_view_if_needed()
        box = tab.locator("#plot .u-over").bounding_box()
        tab.touchscreen.tap(box["x"] + 2, box["y"] + box["height"] / 2)
        told = tab.text_content("#point")
        assert "stock.receipt" in told and "reference PO-1" in told
    finally:
        context.close()
    assert {urlsplit(url).hostname for url in sent} == {"127.0.0.1"}
