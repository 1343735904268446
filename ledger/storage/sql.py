"""A thin cursor wrapper so that one SQL text (written with %s) serves PostgreSQL and SQLite."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

Row = Mapping[str, Any]


class DbCursor(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def executemany(self, sql: Any, params_seq: Any) -> Any: ...
    def fetchall(self) -> Any: ...


class SqlTx:
    """One transaction's cursor. `qmark` turns %s placeholders into SQLite's ?."""

    def __init__(self, cursor: DbCursor, *, qmark: bool, connection: Any = None) -> None:
        self.cursor = cursor
        self.qmark = qmark
        self.connection = connection  # PostgreSQL only: for pipeline mode

    def pipeline(self) -> contextlib.AbstractContextManager[Any]:
        """Statements inside are sent without waiting for each other (PostgreSQL pipeline mode)."""
        if self.connection is None:
            return contextlib.nullcontext()
        return self.connection.pipeline()  # type: ignore[no-any-return]

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.qmark else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self.cursor.executemany(self._sql(sql), rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cursor.execute(self._sql(sql), params)
        return list(self.cursor.fetchall())

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def defer(self, sql: str, params: Sequence[Any] = ()) -> Deferred:
        """Sends a query now and reads its rows later. On PostgreSQL in pipeline mode, queries
        deferred together travel in one round trip: the first `.rows()` syncs them all."""
        if self.connection is None or self.qmark:
            return Deferred(rows=self.fetchall(sql, params))
        cursor = self.connection.cursor()
        cursor.execute(sql, params)
        return Deferred(cursor=cursor)


class Deferred:
    def __init__(self, *, rows: list[Row] | None = None, cursor: Any = None) -> None:
        self._rows = rows
        self._cursor = cursor

    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = list(self._cursor.fetchall())
            self._cursor.close()
        return self._rows


def placeholders(count: int, width: int = 1) -> str:
    """`(%s,%s),(%s,%s)` for count rows of width columns; `%s,%s` when width is 1."""
    if width == 1:
        return ",".join(["%s"] * count)
    one = "(" + ",".join(["%s"] * width) + ")"
    return ",".join([one] * count)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class BulkInsert:
    """An INSERT of many rows: executemany on SQLite, one `unnest` of column arrays on PostgreSQL
    (one statement and one round trip, whatever the row count)."""

    def __init__(self, table: str, columns: Sequence[tuple[str, str]], suffix: str = "") -> None:
        names = ", ".join(name for name, _ in columns)
        self.width = len(columns)
        self.qmark_sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['?'] * len(columns))}) {suffix}"
        arrays = ", ".join(f"%s::{pg_type}[]" for _, pg_type in columns)
        self.unnest_sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {suffix}"

    def run(self, tx: SqlTx, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if tx.qmark:
            tx.cursor.executemany(self.qmark_sql, rows)
        else:
            tx.cursor.execute(self.unnest_sql, [list(column) for column in zip(*rows, strict=True)])
