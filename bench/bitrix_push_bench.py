"""Times a full push of 10,000 SKUs x 3 stores to the fake Bitrix under its documented limits.

The fake counts requests in Bitrix's leaky bucket (X = 50 requests of burst, drained at Y = 2 a
second; 503 QUERY_LIMIT_EXCEEDED past it) and the client keeps the same bucket. The ideal is the
number of batch requests needed (one command per SKU, 50 commands a batch) at the allowed rate:
batches / Y, or (batches - X) / Y when the bucket starts empty.

    python bench/bitrix_push_bench.py [--skus 10000] [--stores 3] [--mode product]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from adapters.bitrix import BitrixConfig, BitrixTarget
from adapters.db import open_database
from adapters.httpserver import HttpServer
from adapters.mappings import MappingRow, Mappings, save
from adapters.outbound import OutboundWorker, WorkerLimits, set_position
from devtools.fakes.bitrix import FakeBitrix
from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import EventType, Line, StockEvent

BURST_X = 50
DRAIN_Y = 2.0
LINES_PER_EVENT = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--mode", choices=("product", "documents"), default="product")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bitrix-bench-"))
    url = f"sqlite:///{directory / 'ledger.db'}"
    skus = [f"SKU-{n:05d}" for n in range(args.skus)]
    stores = [f"store-{n}" for n in range(1, args.stores + 1)]

    ledger = build_ledger(Settings(database_url=url))
    ledger.start()
    started = time.monotonic()
    now = datetime.now(UTC)
    events = [
        StockEvent(
            f"bench-{store}-{start}",
            "bench",
            EventType.RECEIPT,
            now,
            store,
            tuple(Line(sku, 1 + (n + i) % 97) for i, sku in enumerate(skus[start : start + LINES_PER_EVENT])),
        )
        for n, store in enumerate(stores)
        for start in range(0, len(skus), LINES_PER_EVENT)
    ]
    ledger.submit_and_wait(events)
    print(f"recorded {args.skus} SKUs x {args.stores} stores in {time.monotonic() - started:.1f}s")

    recorder = open_database(url, 4, 30)
    rows = [MappingRow("bitrix", "store", store, str(n)) for n, store in enumerate(stores, start=1)]
    rows += [MappingRow("bitrix", "sku", sku, str(100_000 + n), "product") for n, sku in enumerate(skus)]
    save(recorder, rows)
    fake = FakeBitrix(
        burst_requests_max=BURST_X, drain_per_s=DRAIN_Y, inventory_management=args.mode == "documents"
    )
    fake.stores.update(str(n) for n in range(1, args.stores + 1))
    for n in range(args.skus):
        fake.add_product(str(100_000 + n))
    server = HttpServer(fake).start()
    config = BitrixConfig(
        webhook_url=server.url + fake.webhook_path,
        push=frozenset({args.mode}),
        burst_requests_max=BURST_X,
        requests_per_s=DRAIN_Y,
        timeout_s=30.0,
    )
    target = BitrixTarget(recorder, Mappings(recorder, refresh_s=60), config)
    worker = OutboundWorker(recorder, target, WorkerLimits(backoff_initial_s=0.5, backoff_max_s=5.0))
    set_position(recorder, "bitrix", len(events))  # a full push, not a catch-up of the log

    started = time.monotonic()
    report = worker.run_once(full=True)
    elapsed_s = time.monotonic() - started
    server.stop()
    ledger.stop()

    batches = fake.requests
    ideal_batches = math.ceil(args.skus / 50)
    print(f"mode {args.mode}: pushed {report.pushed} SKUs, parked {report.parked}, in {elapsed_s:.1f}s")
    print(f"requests sent {batches} (rate-limited answers: {fake.rate_limited}); commands {len(fake.calls)}")
    if args.mode == "product":
        print(
            f"ideal: {ideal_batches} batches / {DRAIN_Y:g} per s = {ideal_batches / DRAIN_Y:.1f}s; "
            f"with the first {BURST_X} in the burst: {max(0, ideal_batches - BURST_X) / DRAIN_Y:.1f}s"
        )
    else:
        print(
            f"ideal (requests actually needed at {DRAIN_Y:g}/s after a burst of {BURST_X}): "
            f"{max(0, batches - BURST_X) / DRAIN_Y:.1f}s"
        )
    wrong = [pid for pid, p in fake.products.items() if p["quantity"] <= 0]
    print(f"products left at zero: {len(wrong)}")


if __name__ == "__main__":
    main()
