"""The read baseline: a trivial FastAPI endpoint on the ledger's path, served by uvicorn as `ledger serve` is.

Run as `python bench/trivial_app.py --port P [--workers N] [--log-level L]`; options `ledger serve` knows and
this does not (the lead's experiments) are ignored, so the same --serve-args can be passed to both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

app = FastAPI(title="trivial")

LEVEL = {
    "on_hand": 1000,
    "reserved": 0,
    "available": 1000,
    "incoming": 0,
    "position": 1,
    "updated_at": "2026-11-22T10:15:00+00:00",
}


@app.get("/v1/stores/{store}/stock/{sku}")
async def stock(store: str, sku: str) -> dict[str, object]:
    return {"store_id": store, "sku": sku, **LEVEL}


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args, _ignored = parser.parse_known_args(argv)
    # The same options `ledger serve` gives uvicorn (ledger/cli.py).
    common = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers > 1:
        uvicorn.run("trivial_app:app", workers=args.workers, app_dir=str(Path(__file__).parent), **common)
    else:
        uvicorn.run(app, **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
