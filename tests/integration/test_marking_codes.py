"""Marking codes and SSCCs on lines (CONTRACT §10), over HTTP, on both databases.

A shipment, sale, POS sale or return line may carry `codes`; they change no level, are kept with
the entry, shown on its history entries, and `?code=X` finds every entry that carries X.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import psycopg
from support import api, db
from support import events as ev
from support.ids import unique
from support.server import run_ledger_command

SSCC = "003456789012345678"  # an 18-digit SSCC
CIS_1 = "0104601234567890215ABC!\"%&'*+-./_,:;=<>?"  # a Честный знак code: printable ASCII, no GS
CIS_2 = "0104601234567890215XYZ"


def _line(sku: str, qty: int, *codes: str) -> dict[str, Any]:
    return {"sku": sku, "qty": qty, "codes": list(codes)}


def _event(event_type: str, store: str, *lines: dict[str, Any], **data: Any) -> dict[str, Any]:
    return ev.envelope(event_type, store, {"lines": list(lines), **data})


def test_codes_are_kept_on_the_entries_shown_in_the_history_and_found_by_code(database_url, serve):
    server = serve(database_url)
    store, other = unique("shop"), unique("shop")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 10), ("B", 10)), ev.receipt(other, ("A", 10)))
        api.record(
            client,
            _event("stock.shipment", store, _line("A", 2, CIS_1, CIS_2), _line("B", 1, SSCC), order_id="O-1"),
            _event("stock.sale", store, _line("A", 1, "0104601234567890215S01")),
            _event("stock.pos_sale", store, _line("B", 1, "0104601234567890215P01")),
            _event("stock.return", store, _line("A", 1, CIS_1), order_id="O-1"),
            _event("stock.pos_sale", other, _line("A", 1, CIS_1)),  # the same code at another store
        )
        levels = api.level(client, store, "A")
        assert (levels["on_hand"], levels["reserved"]) == (10 - 2 - 1 + 1, 0)  # codes change no level

        history = api.history(client, store)
        by_type = {(e["type"], e["sku"]): e for e in history}
        assert by_type[("stock.shipment", "A")]["codes"] == [CIS_1, CIS_2]  # in the line's order
        assert by_type[("stock.shipment", "B")]["codes"] == [SSCC]
        assert by_type[("stock.sale", "A")]["codes"] == ["0104601234567890215S01"]
        assert by_type[("stock.pos_sale", "B")]["codes"] == ["0104601234567890215P01"]
        assert "codes" not in by_type[("stock.receipt", "A")]

        found = api.history(client, store, code=CIS_1)
        assert [(e["type"], e["sku"], e["order_id"]) for e in found] == [
            ("stock.shipment", "A", "O-1"),
            ("stock.return", "A", "O-1"),
        ]
        one_page = client.get(f"/v1/stores/{store}/history", params={"code": CIS_1, "limit": 1}).json()
        assert len(one_page["entries"]) == 1 and one_page["next"] is not None
        rest = client.get(
            f"/v1/stores/{store}/history", params={"code": CIS_1, "after": one_page["next"]}
        ).json()
        assert [e["type"] for e in rest["entries"]] == ["stock.return"] and rest["next"] is None
        assert [e["sku"] for e in api.history(client, store, code=SSCC, type="stock.shipment")] == ["B"]
        assert api.history(client, store, code="never-seen") == []
        # A reservation's lines may name the codes the order asks for (the WMS picks them).
        placed = api.reserve(client, store, "R-1", ("B", 1), lines=[{"sku": "B", "qty": 1, "codes": [SSCC]}])
        assert placed.status_code == 201, placed.text
        [reserved] = api.history(client, store, code=SSCC, type="stock.reservation")
        assert (reserved["reservation_id"], reserved["codes"]) == ("R-1", [SSCC])
        assert [e["type"] for e in api.history(client, other, code=CIS_1)] == ["stock.pos_sale"]


def _refused(client: httpx.Client, document: dict[str, Any], field: str) -> None:
    response = client.post("/v1/events", json=document)
    body = api.assert_problem(response, 422)
    assert field in [error["field"] for error in body["errors"]], body


def test_codes_that_break_the_rules_are_refused_naming_the_field(database_url, serve):
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 10), ("B", 10)))
        _refused(client, _event("stock.receipt", store, _line("A", 1, "X1")), "data.lines[0].codes")
        _refused(
            client,
            _event("stock.adjustment", store, _line("A", -1, "X1"), reason="damaged"),
            "data.lines[0].codes",
        )
        _refused(client, _event("stock.shipment", store, _line("A", 1, "X1", "X2")), "data.lines[0].codes")
        _refused(client, _event("stock.sale", store, _line("A", 1, "")), "data.lines[0].codes[0]")
        _refused(client, _event("stock.sale", store, _line("A", 1, "X" * 201)), "data.lines[0].codes[0]")
        _refused(client, _event("stock.sale", store, _line("A", 1, "tab\there")), "data.lines[0].codes[0]")
        _refused(client, _event("stock.sale", store, _line("A", 1, "код")), "data.lines[0].codes[0]")
        _refused(
            client,
            _event("stock.shipment", store, _line("A", 1, "X1"), _line("B", 1, "X1")),
            "data.lines[1].codes[0]",
        )
        bad = _event("stock.sale", store, {"sku": "A", "qty": 1, "codes": "X1"})
        _refused(client, bad, "data.lines[0].codes")
        # In an array, the invalid element alone is refused.
        results = api.post_events(
            client,
            _event("stock.pos_sale", store, _line("A", 1, "X" * 200)),
            _event("stock.receipt", store, _line("B", 1, "Y")),
        )
        assert [r["outcome"] for r in results] == ["accepted", "invalid"]
        assert (
            api.level(client, store, "A")["on_hand"] == 9 and api.level(client, store, "B")["on_hand"] == 10
        )
        history = f"/v1/stores/{store}/history"
        problem = api.assert_problem(client.get(history, params={"code": "a\u00e9"}), 422)
        assert [error["field"] for error in problem["errors"]] == ["code"]
        problem = api.assert_problem(client.get(history, params={"code": ""}), 422)
        assert [error["field"] for error in problem["errors"]] == ["code"]


def test_codes_come_back_from_the_log_through_verify_and_rebuild(database_url, serve):
    server = serve(database_url)
    store = unique("shop")
    with server.client() as client:
        api.record(client, ev.receipt(store, ("A", 10)))
        api.record(
            client,
            _event("stock.pos_sale", store, _line("A", 2, CIS_1, CIS_2)),
            _event("stock.return", store, _line("A", 1, CIS_2)),
        )
    assert server.stop() is not None
    verified = run_ledger_command(database_url, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    _execute_each(database_url, "DELETE FROM ledger_history_codes", "UPDATE ledger_history SET codes = NULL")
    damaged = run_ledger_command(database_url, "verify")
    assert damaged.returncode == 1 and "ledger_history_codes" in damaged.stdout, damaged.stdout
    assert run_ledger_command(database_url, "rebuild", "--quiet").returncode == 0

    with serve(database_url).client() as client:
        assert [e["type"] for e in api.history(client, store, code=CIS_2)] == [
            "stock.pos_sale",
            "stock.return",
        ]
        assert api.history(client, store, type="stock.pos_sale")[0]["codes"] == [CIS_1, CIS_2]


def _execute_each(database_url: str, *statements: str) -> None:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(db.sqlite_path(database_url)) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    with psycopg.connect(database_url) as pg:
        for statement in statements:
            pg.execute(statement)  # type: ignore[arg-type]
