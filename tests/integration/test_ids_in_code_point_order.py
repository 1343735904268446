"""Whatever the database, the reads that list stores list them by id as Python and SQLite compare ids:
by code point. PostgreSQL's ORDER BY on text uses the database's collation, and a linguistic one
(en_US.UTF-8, the usual default for a new cluster) orders `S_a, s-B, s.b, sa` as `sa, S_a, s.b, s-B`:
the same ledger answered `GET /v1/stock/{sku}` and `GET /v1/reservations/{id}` in another order on
each database. The test machine has no such locale (and its PostgreSQL no ICU), so each read of
PostgreSQL is answered as such a database would answer it: rows of a query with no order, or ordered
by text ids, come in that collation's order. SQLite always compares text as bytes."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from support import events as ev

from ledger.access.scopes import Role
from ledger.access.store import create_token, read_tokens
from ledger.api.console import queries as console_queries
from ledger.bootstrap import build_ledger
from ledger.config import Settings
from ledger.domain.model import StockEvent
from ledger.service import Ledger
from ledger.sql import Deferred, Row, SqlTx

SOURCE = "tests/id-order"
STORES = ["s-B", "sa", "S_a", "s.b"]
TEXT_IDS = frozenset({"store_id", "reservation_id", "sku", "name"})
_ORDER_BY = re.compile(r"ORDER BY (.+?)(?: LIMIT |$)")


def _linguistic(store_id: str) -> tuple[str, str]:
    """Near enough to en_US.UTF-8 for these ids: punctuation ignored, then case ignored first."""
    return re.sub(r"[-_.:]", "", store_id).casefold(), store_id.swapcase()


def _as_a_linguistic_database_answers(sql: str, rows: list[Row]) -> list[Row]:
    """Rows in no order (store ids in that collation's), or ordered by columns ascending: each text
    id compared in that collation. (Only the order: what a LIMIT cut off is as the database chose.)"""
    if not rows:
        return rows
    order = _ORDER_BY.search(sql)
    if order is None:
        columns = ["name" if "FROM ledger_tokens" in sql else "store_id"]
    else:
        terms = [term.strip() for term in order.group(1).split(",")]
        if any(len(term.split()) > 1 for term in terms):  # DESC, COLLATE: as asked
            return rows
        columns = [term.split(".")[-1] for term in terms]
        if TEXT_IDS.isdisjoint(columns):
            return rows
    if any(column not in rows[0] for column in columns):
        return rows
    return sorted(
        rows,
        key=lambda row: tuple(
            _linguistic(str(row[column])) if column in TEXT_IDS else (str(row[column]), "")
            for column in columns
        ),
    )


@pytest.fixture
def ledger(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    fetchall = SqlTx.fetchall

    def fetched(self: SqlTx, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None) -> Any:
        rows = fetchall(self, sql, params, prepare=prepare)
        return rows if self.qmark else _as_a_linguistic_database_answers(sql, rows)  # SQLite: bytes

    def deferred(self: SqlTx, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None) -> Any:
        return Deferred(rows=fetched(self, sql, params, prepare=prepare))

    built = build_ledger(Settings(database_url=database_url))
    built.start()
    try:
        assert _linguistic_order() != sorted(STORES), "the emulated collation must differ"
        monkeypatch.setattr(SqlTx, "fetchall", fetched)
        monkeypatch.setattr(SqlTx, "defer", deferred)
        yield built
    finally:
        monkeypatch.undo()
        built.stop()


def _linguistic_order() -> list[str]:
    return sorted(STORES, key=_linguistic)


def _event(event_id: str, event_type: str, store: str, qty: int = 2, **data: Any) -> StockEvent:
    return ev.stock_event(f"{event_id}-{store}", event_type, store, [("A", qty)], source=SOURCE, **data)


def test_a_sku_across_stores_lists_its_stores_by_code_point(ledger: Ledger) -> None:
    ledger.submit_and_wait([_event("receipt", "stock.receipt", store) for store in STORES])
    _, _, now = ledger.sku_totals("A")
    assert [view.store_id for view in now] == sorted(STORES)
    _, _, then = ledger.sku_totals("A", datetime(2999, 1, 1, tzinfo=UTC))
    assert [view.store_id for view in then] == sorted(STORES), "?occurred_as_of= the same"


def test_a_reservation_across_stores_lists_its_parts_by_code_point(ledger: Ledger) -> None:
    ledger.submit_and_wait([_event("receipt", "stock.receipt", store) for store in STORES])
    ledger.submit_and_wait(
        [_event("reserve", "stock.reservation", store, reservation_id="R1") for store in STORES]
    )
    parts = ledger.reservations_by_id("R1", len(STORES) + 1)
    assert [part.reservation.store_id for part in parts] == sorted(STORES)
    parts = ledger.reservations_at("R1", _linguistic_order())
    assert [part.reservation.store_id for part in parts] == sorted(STORES)


def test_the_consoles_stores_and_open_reservations_are_listed_by_code_point(ledger: Ledger) -> None:
    """The console lists a scoped token's stores sorted in Python, every store from the database: the
    two, and the two databases, differed. (Beyond its LEDGER_CONSOLE_STORES_MAX, which stores the
    database reads first still follows its collation: see console/queries.py.)"""
    ledger.submit_and_wait([_event("receipt", "stock.receipt", store, 10) for store in STORES])
    reservations = ["R-B", "Ra", "R_a", "R.b"]
    ledger.submit_and_wait(
        [_event(f"reserve-{r}", "stock.reservation", "sa", reservation_id=r) for r in reservations]
    )
    with ledger.reading("test") as tx:
        assert console_queries.store_ids(tx, len(STORES)) == sorted(STORES)
        listed = [row["reservation_id"] for row in console_queries.open_reservations(tx, "sa", 10)]
    assert listed == sorted(reservations)


def test_tokens_are_listed_by_name_in_code_point_order(ledger: Ledger) -> None:
    """`ledger tokens list`, and the access book, read them by name."""
    for name in STORES:
        create_token(
            ledger.recorder,
            name=name,
            role=Role.READER,
            stores=None,
            sources=None,
            expires_at=None,
            rate_per_s=None,
            now=datetime.now(UTC),
        )
    with ledger.reading("test") as tx:
        assert [record.name for record in read_tokens(tx)] == sorted(STORES)
