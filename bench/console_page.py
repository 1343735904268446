"""The console's first-page load time and transferred bytes (issue #13), and the README's screenshots.

Starts `ledger serve` on a new SQLite file with a reader token, records a shop's history (a SKU
with a few hundred entries over two months of event time, reservations, a count, a transfer),
then opens the console in Debian's chromium through Playwright: each round a new browser context
(nothing cached) logs in and loads one store's SKU page (the heaviest: figures, explanation,
timeline plot with uPlot). The figures are the Navigation Timing of that first page (load event)
and the bytes it transferred with every asset. Not a test: it asserts nothing about speed.

    python bench/console_page.py                        # 5 rounds
    python bench/console_page.py --screenshots docs/screenshots
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from frame import ledger_command
from plumbing import Server, free_port, wait_ready

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STORE, OTHER, SKU = "store-12", "warehouse-1", "TEA-GREEN-100G"
DAYS = 60
LAPTOP = {"width": 1280, "height": 800}
TABLET = {"width": 820, "height": 1180}
WAIT_MS = 20_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="cold loads of the first page measured")
    parser.add_argument("--screenshots", type=Path, help="write the README's screenshots into this folder")
    return parser.parse_args()


def _envelope(n: int, kind: str, store: str, day: float, data: dict[str, Any], source: str) -> dict[str, Any]:
    when = datetime(2026, 9, 1, 9, tzinfo=UTC) + timedelta(days=day)
    return {
        "specversion": "1.0",
        "id": f"bench-{n}",
        "source": source,
        "type": kind,
        "time": when.isoformat(),
        "subject": store,
        "datacontenttype": "application/json",
        "data": data,
    }


def history() -> list[dict[str, Any]]:
    """A shop's two months of one tea: deliveries, till sales, online reservations, a count."""
    events: list[dict[str, Any]] = []
    n = 0

    def add(kind: str, store: str, day: float, data: dict[str, Any], source: str = "erp/1c") -> None:
        nonlocal n
        n += 1
        events.append(_envelope(n, kind, store, day, data, source))

    add(
        "stock.receipt",
        OTHER,
        0,
        {"lines": [{"sku": SKU, "qty": 400}, {"sku": "TEA-BLACK-100G", "qty": 120}]},
    )
    add("stock.receipt", STORE, 0.1, {"lines": [{"sku": SKU, "qty": 60}], "reference": "PO-7781"})
    add(
        "stock.receipt", STORE, 0.1, {"lines": [{"sku": "TEA-GREEN-250G", "qty": 20}], "reference": "PO-7781"}
    )
    for day in range(1, DAYS):
        for sale in range(2):
            till = {"lines": [{"sku": SKU, "qty": 1}], "reference": f"receipt {day:03d}-{sale}"}
            add("stock.pos_sale", STORE, day + 0.3 + sale / 10, till, source="pos/store-12/till-2")
        if day % 2 == 0:
            rid = f"web-{day:03d}"
            add(
                "stock.reservation",
                STORE,
                day + 0.5,
                {"lines": [{"sku": SKU, "qty": 2}], "reservation_id": rid, "order_id": f"o-{day}"},
                source="shop/online",
            )
            if day < DAYS - 6:
                add(
                    "stock.shipment",
                    STORE,
                    day + 1.2,
                    {"lines": [{"sku": SKU, "qty": 2}], "reservation_id": rid},
                    source="shop/online",
                )
        if day % 9 == 0:
            add(
                "stock.transfer",
                OTHER,
                day + 0.2,
                {"lines": [{"sku": SKU, "qty": 30}], "to_store": STORE, "transfer_id": f"t-{day}"},
                source="erp/1c",
            )
            add(
                "stock.receipt",
                STORE,
                day + 1.0,
                {
                    "lines": [{"sku": SKU, "qty": 30}],
                    "transfer_id": f"t-{day}",
                    "reference": f"transfer t-{day}",
                },
                source="erp/1c",
            )
        if day == 40:
            add(
                "stock.count",
                STORE,
                day + 0.9,
                {"lines": [{"sku": SKU, "qty": 25}], "reference": "count Oct"},
                source="wms/counts",
            )
    soon = (datetime.now(UTC) + timedelta(minutes=25)).isoformat()
    add(
        "stock.reservation",
        STORE,
        DAYS,
        {
            "lines": [{"sku": SKU, "qty": 1}],
            "reservation_id": "web-soon",
            "order_id": "o-soon",
            "expires_at": soon,
        },
        source="shop/online",
    )
    add(
        "stock.transfer",
        OTHER,
        DAYS,
        {"lines": [{"sku": SKU, "qty": 12}], "to_store": STORE, "transfer_id": "t-last"},
        source="erp/1c",
    )
    return events


def _plugged_in_adapters(folder: Path, env: dict[str, str]) -> None:
    """Lets `ledger serve` find the adapters' console entry point even in an environment installed
    from another checkout (an install of this one declares it), and gives it two push targets."""
    from importlib.metadata import entry_points

    from adapters.db import open_database, transaction
    from ledger.api.console.adapter_states import CONSOLE_PLUGINS

    if not entry_points(group=CONSOLE_PLUGINS):
        info = folder / "console_plugins-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: console-plugins\nVersion: 0\n")
        declared = f"[{CONSOLE_PLUGINS}]\nadapters = adapters.console:adapter_states\n"
        (info / "entry_points.txt").write_text(declared)
        paths = [str(folder), str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    recorder = open_database(env["LEDGER_DATABASE_URL"], 2, 10)
    try:
        with transaction(recorder) as tx:
            rows = [
                (
                    "bitrix",
                    180,
                    412,
                    3,
                    1,
                    "429 Too Many Requests from https://shop.bitrix24.ru/rest/***",
                    "now",
                ),
                ("wms", 198, 655, 0, 0, None, "now"),
            ]
            for adapter, position, pushed, failures, parked, error, _ in rows:
                tx.execute(
                    "INSERT INTO adapter_positions (adapter, position, pushed_total, failures_total, "
                    "parked_total, last_error, last_push_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        adapter,
                        position,
                        pushed,
                        failures,
                        parked,
                        error,
                        datetime.now(UTC).isoformat(),
                        "now",
                    ),
                )
            tx.execute(
                "INSERT INTO adapter_parked (adapter, item_key, position, reason, attempts, payload, "
                "parked_at, retry_requested) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                ("bitrix", "TEA-GREEN-250G", 3, "unknown product", 5, "{}", "now", 0),
            )
    finally:
        recorder.close()


def _token(env: dict[str, str], name: str, role: str) -> str:
    done = subprocess.run(
        [*ledger_command(), "tokens", "create", "--name", name, "--role", role],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _post(url: str, token: str, events: list[dict[str, Any]]) -> None:
    import httpx

    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
        for start in range(0, len(events), 1):  # one by one: each its own recorded time
            answer = client.post("/v1/events", json=events[start : start + 1])
            answer.raise_for_status()


def _login(context: Any, url: str, token: str) -> Any:
    page = context.new_page()
    page.goto(f"{url}/ui")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#q")  # the search box: logged in (the login form is at /ui too)
    return page


_TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const assets = performance.getEntriesByType("resource");
  return {load_ms: nav.loadEventEnd - nav.startTime, dom_ms: nav.domContentLoadedEventEnd - nav.startTime,
          page_bytes: nav.transferSize, asset_bytes: assets.reduce((s, r) => s + r.transferSize, 0),
          assets: assets.length};
}"""


def measure(browser: Any, url: str, token: str, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Each round in a new context (nothing cached): the login form, the first page after it (the
    search), then in another new context the heaviest page, one store's SKU."""
    figures: dict[str, list[dict[str, Any]]] = {"login": [], "home": [], "sku": []}
    for _ in range(rounds):
        context = browser.new_context(viewport=LAPTOP)
        page = context.new_page()
        page.goto(f"{url}/ui")
        figures["login"].append(page.evaluate(_TIMING))
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_selector("#q")
        page.wait_for_load_state("load")
        figures["home"].append(page.evaluate(_TIMING))
        context.close()
        context = browser.new_context(viewport=LAPTOP)
        page = _login(context, url, token)
        page.goto(f"{url}/ui/stores/{STORE}/skus/{SKU}")
        page.wait_for_function("document.getElementById('plot').dataset.points > 0")
        figures["sku"].append(page.evaluate(_TIMING))
        context.close()
    return figures


def screenshots(browser: Any, url: str, token: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shots = [
        ("find", LAPTOP, "/ui?q=TEA", False),
        ("sku", LAPTOP, f"/ui/skus/{SKU}", False),
        ("timeline", LAPTOP, f"/ui/stores/{STORE}/skus/{SKU}?axis=occurred", True),
        ("reservations", LAPTOP, f"/ui/stores/{STORE}/reservations", False),
        ("adapters", LAPTOP, "/ui/adapters", False),
        ("timeline-tablet", TABLET, f"/ui/stores/{STORE}/skus/{SKU}?axis=occurred", True),
    ]
    for name, viewport, path, plot in shots:
        context = browser.new_context(viewport=viewport, device_scale_factor=1)
        page = _login(context, url, token)
        page.goto(url + path)
        if plot:
            page.wait_for_function("document.getElementById('plot').dataset.points > 0")
            box = page.locator("#plot .u-over").bounding_box()
            page.locator("#plot").scroll_into_view_if_needed()
            box = page.locator("#plot .u-over").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.66, box["y"] + box["height"] / 2)
            page.mouse.move(box["x"] + box["width"] * 0.67, box["y"] + box["height"] / 2, steps=3)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        context.close()


def main() -> int:
    args = parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="console-bench-") as scratch:
        port = free_port()
        env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{scratch}/ledger.db"}
        admin = _token(env, "bench-admin", "admin")
        reader = _token(env, "auditor", "reader")
        _plugged_in_adapters(Path(scratch) / "plugins", env)
        server = Server(
            "ledger",
            [*ledger_command(), "serve", "--port", str(port), "--log-level", "warning"],
            env,
            Path(scratch) / "ledger.log",
        )
        server.start()
        try:
            wait_ready(server, port, "/readyz", 60)
            url = f"http://127.0.0.1:{port}"
            events = history()
            _post(url, admin, events)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                figures = measure(browser, url, reader, args.rounds)
                if args.screenshots:
                    screenshots(browser, url, reader, args.screenshots)
                browser.close()
        finally:
            server.stop()
    summary = {
        name: {
            "load_ms_median": statistics.median(f["load_ms"] for f in rounds),
            "load_ms_max": max(f["load_ms"] for f in rounds),
            "bytes_transferred_median": statistics.median(f["page_bytes"] + f["asset_bytes"] for f in rounds),
            "assets": rounds[0]["assets"],
        }
        for name, rounds in figures.items()
    }
    report = {"events": len(events), "pages": summary, "rounds": figures}
    report |= {"load_average": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
