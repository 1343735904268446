"""Times a reconciliation report of 10,000 SKUs x 3 stores against the fake WMS and the fake MoySklad.

Each round records the SKUs in a fresh SQLite ledger, fills the fake with the same figures except
a few that differ and a few it does not list (the report must leave those untouched), then times
the read (every page, under the target's limit) and the comparison, and checks the report: exactly
the changed SKUs differ, exactly the unlisted ones are untouched. The ideal is the requests needed
at the allowed rate: MoySklad 45 request units per 3 s window, report/stock/all weighing 5 (so 9
pages per window; the first 9 need no wait); the WMS `LEDGER_WMS_REQUESTS_PER_S` (10) a second.

    python bench/reconcile_bench.py [--skus 10000] [--stores 3] [--source wms|moysklad] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.db import open_database
from adapters.httpserver import HttpServer
from adapters.mappings import MappingRow, Mappings, save
from adapters.moysklad import REPORT_PAGE_MAX, REPORT_REQUEST_WEIGHT, MoySkladClient, MoySkladConfig
from adapters.reconcile import make_report
from adapters.snapshots import read_moysklad_snapshot
from adapters.wms import WmsClient, WmsConfig
from adapters.wms_stock import read_wms_snapshot
from devtools.fakes.moysklad import FakeMoySklad
from devtools.fakes.wms import STOCK_PER_PAGE_MAX, FakeWms
from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import EventType, Line, StockEvent

LINES_PER_EVENT = 1000
CHANGED_EVERY = 97  # one SKU in 97 differs in the external system
UNLISTED_EVERY = 101  # one SKU in 101 is not listed there at all
MOYSKLAD_UNITS_PER_WINDOW, MOYSKLAD_WINDOW_S = 45, 3.0
WMS_REQUESTS_PER_S = 10.0


def on_hand_of(n: int) -> int:
    return 1 + n % 50


def record_ledger(url: str, skus: list[str], stores: list[str]) -> None:
    ledger = build_ledger(Settings(database_url=url))
    ledger.start()
    try:
        now = datetime.now(UTC)
        ledger.submit_and_wait(
            [
                StockEvent(
                    f"bench-{store}-{start}",
                    "bench",
                    EventType.RECEIPT,
                    now,
                    store,
                    tuple(
                        Line(sku, on_hand_of(start + i))
                        for i, sku in enumerate(skus[start : start + LINES_PER_EVENT])
                    ),
                )
                for store in stores
                for start in range(0, len(skus), LINES_PER_EVENT)
            ]
        )
    finally:
        ledger.stop()


def external_figure(n: int) -> int | None:
    """What the external system says of SKU n: None when it does not list it."""
    if n % UNLISTED_EVERY == 0:
        return None
    return on_hand_of(n) + (3 if n % CHANGED_EVERY == 0 else 0)


def wms_round(recorder: Any, skus: list[str], stores: list[str]) -> dict[str, Any]:
    fake = FakeWms(warehouses={f"wh-{store}" for store in stores})
    for store in stores:
        for n, sku in enumerate(skus):
            figure = external_figure(n)
            if figure is not None:
                fake.put_stock(f"wh-{store}", sku, on_hand=figure, reserved=min(figure, 2))
    save(recorder, [MappingRow("wms", "store", store, f"wh-{store}") for store in stores])
    server = HttpServer(fake).start()
    try:
        client = WmsClient(
            WmsConfig(server.url + "/", fake.api_key, WMS_REQUESTS_PER_S, 30.0, STOCK_PER_PAGE_MAX, 2000)
        )
        started = time.monotonic()
        snapshot = read_wms_snapshot(client, Mappings(recorder, refresh_s=0))
        read_s = time.monotonic() - started
        report = make_report(recorder, snapshot, run_id=f"bench-{uuid.uuid4().hex[:6]}", stores=stores)
        total_s = time.monotonic() - started
    finally:
        server.stop()
    requests = fake.requests
    # The client's window: WMS_REQUESTS_PER_S requests a second, the first second's need no wait.
    ideal_s = max(0, math.ceil(requests / WMS_REQUESTS_PER_S) - 1) * 1.0
    return {
        "requests": requests,
        "rate_limited": 0,
        "ideal_s": ideal_s,
        "read_s": read_s,
        "total_s": total_s,
        "report": report,
    }


def moysklad_round(recorder: Any, skus: list[str], stores: list[str]) -> dict[str, Any]:
    fake = FakeMoySklad(requests_per_window=MOYSKLAD_UNITS_PER_WINDOW, window_s=MOYSKLAD_WINDOW_S)
    store_uuids = {store: str(uuid.uuid5(uuid.NAMESPACE_URL, store)) for store in stores}
    sku_uuids = {sku: str(uuid.uuid5(uuid.NAMESPACE_URL, sku)) for sku in skus}
    fake.stores.update(store_uuids.values())
    fake.products.update({u: "product" for u in sku_uuids.values()})
    for store in stores:
        for n, sku in enumerate(skus):
            figure = external_figure(n)
            if figure is not None:
                fake.set_stock(
                    sku_uuids[sku], store_uuids[store], float(figure), reserve=float(min(figure, 2))
                )
    rows = [MappingRow("moysklad", "store", store, u) for store, u in store_uuids.items()]
    rows += [MappingRow("moysklad", "sku", sku, u, "product") for sku, u in sku_uuids.items()]
    save(recorder, rows)
    server = HttpServer(fake).start()
    fake.origin = server.url
    try:
        config = MoySkladConfig(
            server.url + "/api/remap/1.2",
            fake.token,
            MOYSKLAD_UNITS_PER_WINDOW,
            MOYSKLAD_WINDOW_S,
            timeout_s=30.0,
        )
        started = time.monotonic()
        snapshot = read_moysklad_snapshot(MoySkladClient(config), Mappings(recorder, refresh_s=0))
        read_s = time.monotonic() - started
        report = make_report(recorder, snapshot, run_id=f"bench-{uuid.uuid4().hex[:6]}", stores=stores)
        total_s = time.monotonic() - started
    finally:
        server.stop()
    pages = fake.report_pages_served
    pages_per_window = MOYSKLAD_UNITS_PER_WINDOW // REPORT_REQUEST_WEIGHT
    ideal_s = max(0, math.ceil(pages / pages_per_window) - 1) * MOYSKLAD_WINDOW_S
    return {
        "requests": fake.requests,
        "request_units": pages * REPORT_REQUEST_WEIGHT,
        "rate_limited": fake.rate_limited,
        "ideal_s": ideal_s,
        "read_s": read_s,
        "total_s": total_s,
        "report": report,
        "pages": pages,
        "page_rows_max": REPORT_PAGE_MAX,
    }


def check(report: Any, skus: list[str], stores: list[str]) -> dict[str, bool]:
    changed = {
        (s, sku)
        for s in stores
        for n, sku in enumerate(skus)
        if external_figure(n) is not None and n % CHANGED_EVERY == 0
    }
    unlisted = {(s, sku) for s in stores for n, sku in enumerate(skus) if external_figure(n) is None}
    return {
        "exactly the changed SKUs differ": {(d.store_id, d.sku) for d in report.discrepancies} == changed,
        "every change is +3": all(d.difference_units == 3 for d in report.discrepancies),
        "exactly the unlisted SKUs are untouched": {(u.store_id, u.sku) for u in report.untouched}
        == unlisted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--source", choices=("wms", "moysklad"), action="append")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--output", type=Path, help="write every round as JSON here")
    args = parser.parse_args()
    skus = [f"SKU-{n:05d}" for n in range(args.skus)]
    stores = [f"store-{n}" for n in range(1, args.stores + 1)]
    results = []
    for source in args.source or ["wms", "moysklad"]:
        for round_no in range(1, args.rounds + 1):
            directory = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
            url = f"sqlite:///{directory / 'ledger.db'}"
            record_ledger(url, skus, stores)
            recorder = open_database(url, 4, 30)
            try:
                load_before = os.getloadavg()
                measured = (wms_round if source == "wms" else moysklad_round)(recorder, skus, stores)
                load_after = os.getloadavg()
            finally:
                recorder.close()
            report = measured.pop("report")
            checks = check(report, skus, stores)
            row = {
                "source": source,
                "round": round_no,
                "skus": args.skus,
                "stores": args.stores,
                "compared": report.compared,
                "discrepancies": len(report.discrepancies),
                "untouched": len(report.untouched),
                **{k: round(v, 2) if isinstance(v, float) else v for k, v in measured.items()},
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in load_after],
                "checks": checks,
            }
            results.append(row)
            print(
                f"{source} round {round_no}: {args.skus} SKUs x {args.stores} stores read in "
                f"{row['read_s']:.2f}s, report in {row['total_s']:.2f}s (ideal {row['ideal_s']:.1f}s); "
                f"{row['requests']} requests, {row['rate_limited']} rate-limited; "
                f"{row['discrepancies']} differ, {row['untouched']} untouched; "
                f"load {row['load_before']} -> {row['load_after']}; "
                f"checks {'passed' if all(checks.values()) else checks}"
            )
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    raise SystemExit(0 if all(all(r["checks"].values()) for r in results) else 1)


if __name__ == "__main__":
    main()
