"""`ledger fakes`: the three fake servers on local ports, seeded for the adapters' walkthrough."""

from __future__ import annotations

import argparse
import signal
import threading

from adapters.httpserver import Handler, HttpServer
from devtools.fakes.bitrix import FakeBitrix
from devtools.fakes.moysklad import FakeMoySklad
from devtools.fakes.wms import FakeWms
from ledger.config import Settings

# What the walkthrough in adapters/README.md expects to find.
BITRIX_PRODUCT_IDS = range(101, 111)
BITRIX_ORDER_IDS = range(1, 100)
BITRIX_STORE_IDS = ("1", "2", "3")
# The WMS's stock for the reconciliation step: SKU-2 in zone B, 4 on hand, 1 of them being picked;
# SKU-1 is not listed (the step shows it left untouched).
WMS_STOCK = (("main", "SKU-2", 4, 0, 1, "B"),)
# MoySklad's store and products for the walkthrough's customer order (store-1's SKU-1 and SKU-2).
MOYSKLAD_STORE = "5e1f0000-0000-4000-8000-000000000001"
MOYSKLAD_PRODUCTS = ("0b3c0000-0000-4000-8000-000000000101", "0b3c0000-0000-4000-8000-000000000102")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """`ledger fakes` (its arguments are declared in ledger/cli.py): serves until Ctrl-C or --seconds."""
    bitrix = FakeBitrix()
    for product_id in BITRIX_PRODUCT_IDS:
        bitrix.add_product(str(product_id))
    bitrix.orders.update({str(n): {"id": str(n), "statusId": "N"} for n in BITRIX_ORDER_IDS})
    bitrix.stores.update(BITRIX_STORE_IDS)
    moysklad = FakeMoySklad(origin=f"http://127.0.0.1:{args.moysklad_port}")
    moysklad.stores.add(MOYSKLAD_STORE)
    moysklad.products.update({product: "product" for product in MOYSKLAD_PRODUCTS})
    wms = FakeWms()
    for warehouse, sku, on_hand, reserved, in_picking, zone in WMS_STOCK:
        wms.put_stock(warehouse, sku, on_hand, reserved, in_picking, zone)
    servers: list[HttpServer] = []
    try:
        # A port in use raises OSError here; the servers already started are stopped below.
        ports: list[tuple[Handler, int]] = [
            (bitrix, args.bitrix_port),
            (moysklad, args.moysklad_port),
            (wms, args.wms_port),
        ]
        for handler, port in ports:
            servers.append(HttpServer(handler, port).start())
        _print_exports(servers, bitrix, moysklad, wms)
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        stopped.wait(args.seconds)
    finally:
        for server in servers:
            server.stop()
    levels = {pid: (p["quantity"], p["quantityReserved"]) for pid, p in bitrix.products.items()}
    print(f"bitrix products (quantity, reserved): {levels}")
    return 0


def _print_exports(
    servers: list[HttpServer], bitrix: FakeBitrix, moysklad: FakeMoySklad, wms: FakeWms
) -> None:
    bitrix_url, moysklad_url, wms_url = (server.url for server in servers)
    print("fake servers on 127.0.0.1; configure the adapters with:")
    print(f"  export LEDGER_BITRIX_WEBHOOK_URL={bitrix_url}{bitrix.webhook_path}")
    print(f"  export LEDGER_MOYSKLAD_BASE_URL={moysklad_url}/api/remap/1.2")
    print(f"  export LEDGER_MOYSKLAD_TOKEN={moysklad.token}")
    print(f"  export LEDGER_MOYSKLAD_ORGANIZATION_ID={min(moysklad.organizations)}")
    print(f"  export LEDGER_MOYSKLAD_AGENT_ID={min(moysklad.counterparties)}")
    print(f"  export LEDGER_WMS_BASE_URL={wms_url}/")
    print(f"  export LEDGER_WMS_API_KEY={wms.api_key}")
    print("Bitrix products 101-110, stores 1-3 and orders 1-99 exist; the WMS's warehouse main holds SKU-2.")
    print(f"MoySklad store {MOYSKLAD_STORE} and products {', '.join(MOYSKLAD_PRODUCTS)} exist.")
    print("Ctrl-C stops.", flush=True)
