"""A thin cursor wrapper so that one SQL text (written with %s) serves PostgreSQL and SQLite."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson

Row = Mapping[str, Any]
KEYS_PER_STATEMENT_MAX = 500  # SQLite: keys in one statement's list, well inside its parameter limit


class DbCursor(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def executemany(self, sql: Any, params_seq: Any) -> Any: ...
    def fetchall(self) -> Any: ...


class SqlTx:
    """One transaction's cursor. `qmark` turns %s placeholders into SQLite's ?."""

    def __init__(
        self,
        cursor: DbCursor | None,
        *,
        qmark: bool,
        connection: Any = None,
        collected: dict[str, str] | None = None,
    ) -> None:
        self.cursor: Any = cursor
        self.qmark = qmark
        self.connection = connection  # PostgreSQL only: for pipeline mode
        # PostgreSQL, one-statement batches: bulk inserts are kept here (name -> JSON rows) and
        # sent by the recorder as the arguments of one function call (see recorders.py).
        self.collected = collected

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

    def fetchall(self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None) -> list[Row]:
        """`prepare` (PostgreSQL): False plans the query at every run, never from a prepared
        statement's generic plan; None leaves it to psycopg (prepared after a few runs)."""
        if self.qmark or prepare is None:
            self.cursor.execute(self._sql(sql), params)
        else:
            self.cursor.execute(sql, params, prepare=prepare)
        return list(self.cursor.fetchall())

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def read_by_keys(
        self, table: str, columns: str, key: tuple[str, str], keys: Sequence[tuple[str, str]]
    ) -> list[Deferred]:
        """Reads `columns` of the rows of `table` whose `key` (the table's own unique key of two
        columns) is among `keys` (each given once): one query per chunk of keys, deferred. Each
        key is looked up by itself in the key's index, on both databases, however the table's
        statistics stand; `(a, b) IN (...)` is not.
        - PostgreSQL, asked that, hashes the keys and scans the whole table when it thinks the
          table small. A LATERAL subquery with a LIMIT is not folded into a join, so it stays a
          lookup of each key, as long as the plan is made from the table's present size: the query
          is planned at every run, never prepared. A prepared statement's generic plan is made
          from the statistics of its day, and one made while the table was small (autovacuum
          analyzes a new ledger's tables at some 50 rows) scanned it for every key until the next
          ANALYZE. One query over two arrays: one short text, whatever the count.
        - SQLite 3.40 scans the whole table for a VALUES list on the right of `IN`, testing every
          row; walking the list and joining each key to the table (CROSS JOIN fixes that order)
          does not. One query per chunk of at most KEYS_PER_STATEMENT_MAX keys."""
        a, b = key
        if not keys:
            return []
        if not self.qmark:
            sql = (
                f"SELECT found.* FROM unnest(%b::text[], %b::text[]) AS wanted (a, b) CROSS JOIN LATERAL"
                f" (SELECT {columns} FROM {table} WHERE {a} = wanted.a AND {b} = wanted.b LIMIT 1) found"
            )
            return [self.defer(sql, [[k[0] for k in keys], [k[1] for k in keys]], prepare=False)]
        chosen = "found.*" if columns == "*" else columns  # the table's: wanted's are wanted_a, wanted_b
        return [
            self.defer(
                f"WITH wanted (wanted_a, wanted_b) AS (VALUES {placeholders(len(part), 2)})"
                f" SELECT {chosen} FROM wanted CROSS JOIN {table} AS found"
                f" ON found.{a} = wanted_a AND found.{b} = wanted_b",
                [v for k in part for v in k],
            )
            for part in chunks(keys, KEYS_PER_STATEMENT_MAX)
        ]

    def read_by_value(
        self, table: str, columns: str, column: str, values: Sequence[str], within: tuple[str, Sequence[str]]
    ) -> list[Deferred]:
        """Reads `columns` of the rows of `table` whose `column` is among `values` (each given once)
        and whose `within` column is among its values, each value looked up by itself in an index
        of (`column`, `within`'s column), as read_by_keys does (on PostgreSQL `OFFSET 0` keeps the
        subquery from being folded into a join: every row of a value is wanted, so no LIMIT can)."""
        if not values:
            return []
        other, among = within
        if not self.qmark:
            sql = (
                f"SELECT found.* FROM unnest(%b::text[]) AS wanted (value) CROSS JOIN LATERAL"
                f" (SELECT {columns} FROM {table} WHERE {column} = wanted.value AND {other} = ANY(%b::text[])"
                f" OFFSET 0) found"
            )
            return [self.defer(sql, [list(values), list(among)], prepare=False)]
        chosen = "found.*" if columns == "*" else columns
        return [
            self.defer(
                f"WITH wanted (wanted_value) AS (VALUES {','.join(['(%s)'] * len(part))})"
                f" SELECT {chosen} FROM wanted CROSS JOIN {table} AS found ON found.{column} = wanted_value"
                f" WHERE found.{other} IN ({placeholders(len(among))})",
                [*part, *among],
            )
            for part in chunks(values, KEYS_PER_STATEMENT_MAX // 2)
        ]

    def values_in(self, column: str, values: Sequence[str]) -> list[tuple[str, list[Any]]]:
        """`column IN (...)` conditions with their parameters: one array on PostgreSQL, chunks on SQLite."""
        if not values:
            return []
        if not self.qmark:
            return [(f"{column} = ANY(%b::text[])", [list(values)])]
        return [
            (f"{column} IN ({placeholders(len(part))})", list(part))
            for part in chunks(values, KEYS_PER_STATEMENT_MAX)
        ]

    def defer(self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None) -> Deferred:
        """Sends a query now and reads its rows later. On PostgreSQL in pipeline mode, queries
        deferred together travel in one round trip: the first `.rows()` syncs them all.
        `prepare`: as fetchall's."""
        if self.connection is None or self.qmark:
            return Deferred(rows=self.fetchall(sql, params, prepare=prepare))
        cursor = self.connection.cursor()
        cursor.execute(sql, params, prepare=prepare)
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


# The column types of a BulkInsert as psycopg's type registry names them, where they differ.
_COPY_TYPE_NAMES = {"int": "integer"}


class BulkInsert:
    """An INSERT of many rows in one statement: executemany on SQLite; on PostgreSQL one JSON
    array of rows, serialised by orjson and unpacked by the server.

    Why JSON: psycopg builds array parameters element by element in Python, about 1 µs per
    value, which made this the writer's largest cost (some 60 values per event). orjson writes
    the same rows in a fraction of that, and the server parses them in C on its own core."""

    def __init__(self, name: str, table: str, columns: Sequence[tuple[str, str]], suffix: str = "") -> None:
        self.name = name  # the argument that carries its rows in a one-statement batch
        self.table = table
        self.columns = tuple(columns)
        self.suffix = suffix
        self._into: dict[tuple[str, bool], BulkInsert] = {}
        names = ", ".join(name for name, _ in columns)
        self.qmark_sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['?'] * len(columns))}) {suffix}"
        self.bytea_columns = [i for i, (_, pg_type) in enumerate(columns) if pg_type == "bytea"]
        values = ", ".join(
            f"convert_to(r->>{i}, 'UTF8')" if pg_type == "bytea" else f"(r->>{i})::{pg_type}"
            for i, (_, pg_type) in enumerate(columns)
        )
        self.json_sql = (
            f"INSERT INTO {table} ({names}) SELECT {values} "
            f"FROM jsonb_array_elements(%s::jsonb) AS r {suffix}"
        )
        self.copy_sql = f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)"
        self.copy_types = [_COPY_TYPE_NAMES.get(pg_type, pg_type) for _, pg_type in columns]

    def into(self, table: str, *, upsert: bool = True) -> BulkInsert:
        """The same insert into another table of the same columns (`ledger rebuild`'s shadow
        tables); without its ON CONFLICT clause unless `upsert` (a table without its indexes yet)."""
        if table == self.table and (upsert or not self.suffix):
            return self
        key = (table, upsert)
        insert = self._into.get(key)
        if insert is None:
            suffix = self.suffix if upsert else ""
            insert = self._into[key] = BulkInsert(self.name, table, self.columns, suffix)
        return insert

    def copy(self, tx: SqlTx, rows: Sequence[Sequence[Any]]) -> None:
        """The rows into a table that has no indexes yet (`ledger rebuild`'s shadow tables): on
        PostgreSQL by a binary COPY, which the server takes for about a third of what it spends on
        the JSON rows of `run` (bench/README.md, the rebuild); on SQLite as `run` does.

        Each value goes in the binary form of its declared column type, unchecked: text columns
        take str, boolean ones are read by truth, and an `int` column keeps 4 bytes. The rows of
        the projections are so (tests/integration/test_copy_types.py holds the declared types to
        the live tables')."""
        assert not self.suffix, f"{self.table}: a COPY has no ON CONFLICT"
        assert not self.bytea_columns, f"{self.table}: a COPY sends str, not bytea"
        if not rows:
            return
        if tx.qmark:
            tx.cursor.executemany(self.qmark_sql, rows)
            return
        with tx.cursor.copy(self.copy_sql) as copy:
            copy.set_types(self.copy_types)
            for row in rows:
                copy.write_row(row)

    def function_sql(self, argument: str) -> str:
        """The same INSERT inside a PL/pgSQL function whose jsonb `argument` holds the rows."""
        return self.json_sql.replace("%s::jsonb", argument)

    def run(self, tx: SqlTx, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if tx.qmark:
            tx.cursor.executemany(self.qmark_sql, rows)
            return
        if self.bytea_columns and rows and isinstance(rows[0][self.bytea_columns[0]], bytes):
            # UTF-8 text inside (our JSON event states): sent as text. (The writer's rows come as
            # text already: this loop over every value was a visible part of a batch's cost.)
            rows = [
                [value.decode() if i in self.bytea_columns else value for i, value in enumerate(row)]
                for row in rows
            ]
        if tx.collected is not None:
            assert self.name not in tx.collected, f"{self.name}: one bulk insert per batch"
            tx.collected[self.name] = orjson.dumps(rows).decode()
            return
        tx.cursor.execute(self.json_sql, (orjson.dumps(rows).decode(),))
