"""A thin cursor wrapper so that one SQL text (written with %s) serves PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

Row = Mapping[str, Any]


class DbCursor(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def executemany(self, sql: Any, params_seq: Any) -> Any: ...
    def fetchall(self) -> Any: ...


class SqlTx:
    """One transaction's cursor. `qmark` turns %s placeholders into SQLite's ?."""

    def __init__(self, cursor: DbCursor, *, qmark: bool) -> None:
        self.cursor = cursor
        self.qmark = qmark

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


def placeholders(count: int, width: int = 1) -> str:
    """`(%s,%s),(%s,%s)` for count rows of width columns; `%s,%s` when width is 1."""
    if width == 1:
        return ",".join(["%s"] * count)
    one = "(" + ",".join(["%s"] * width) + ")"
    return ",".join([one] * count)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
