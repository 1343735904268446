"""The console's own reads of the projection tables: each bounded by a named maximum and answered
from an index, on both databases. Everything else the console shows comes from the API itself
(ledger/api/console/api_client.py)."""

from __future__ import annotations

from ledger.sql import Row, SqlTx, placeholders

# Store ids and SKUs are ASCII letters, digits and -_.: (CONTRACT §1), all below '~' in byte order:
# every id that starts with P lies in [P, P + '~').
_PREFIX_END = "~"


def _stores_condition(column: str, stores: frozenset[str] | None) -> tuple[str, list[object]]:
    if stores is None:
        return "", []
    ordered = sorted(stores)
    return f" AND {column} IN ({placeholders(len(ordered))})", list(ordered)


def skus_by_prefix(tx: SqlTx, prefix: str, stores: frozenset[str] | None, limit: int) -> list[str]:
    """SKUs that start with `prefix` and have a level at one of `stores` (None: any), in byte
    order: a range of an index of the levels by SKU in byte order (SQLite's ledger_levels_by_sku;
    PostgreSQL's ledger_levels_by_sku_bytes, whatever the database's collation)."""
    sku = "sku" if tx.qmark else 'sku COLLATE "C"'
    where, params = _stores_condition("store_id", stores)
    rows = tx.fetchall(
        f"SELECT DISTINCT {sku} AS sku FROM ledger_levels WHERE {sku} >= %s AND {sku} < %s{where} "
        f"ORDER BY {sku} LIMIT %s",
        [prefix, prefix + _PREFIX_END, *params, limit],
    )
    return [str(row["sku"]) for row in rows]


def store_ids(tx: SqlTx, limit: int) -> list[str]:
    """The stores that hold a level, by id in code point order, at most `limit`: one index probe per
    store (a loose scan of the levels' primary key), never the whole table. The scan follows the
    database's collation (PostgreSQL's may be linguistic), so the stores read are put in code point
    order, as SQLite's and a scoped token's own; beyond `limit`, which stores were read first is
    still the collation's (an index in byte order on every level's store is not worth a console's
    list)."""
    rows = tx.fetchall(
        "WITH RECURSIVE found(store_id, n) AS ("
        " SELECT MIN(store_id), 1 FROM ledger_levels"
        " UNION ALL"
        " SELECT (SELECT MIN(store_id) FROM ledger_levels WHERE store_id > found.store_id), n + 1"
        " FROM found WHERE found.store_id IS NOT NULL AND n < %s"
        ") SELECT store_id FROM found WHERE store_id IS NOT NULL",
        [limit],
    )
    return sorted(str(row["store_id"]) for row in rows)


OPEN_RESERVATION_COLUMNS = "reservation_id, order_id, expires_at, lines, status, remaining, position"


def open_reservations(tx: SqlTx, store_id: str, limit: int) -> list[Row]:
    """A store's reservations still holding stock: those with an expiry first, soonest first,
    then those without, by id; at most `limit`. The partial index ledger_reservations_open
    (store_id, expires_at, reservation_id) WHERE remaining > 0 answers both halves in order: in the
    database's collation, so each half is put in code point order by id (store_ids)."""
    dated = tx.fetchall(
        f"SELECT {OPEN_RESERVATION_COLUMNS} FROM ledger_reservations WHERE store_id = %s "
        "AND remaining > 0 AND expires_at IS NOT NULL ORDER BY expires_at, reservation_id LIMIT %s",
        [store_id, limit],
    )
    dated.sort(key=lambda row: (str(row["expires_at"]), str(row["reservation_id"])))
    if len(dated) >= limit:
        return dated
    undated = tx.fetchall(
        f"SELECT {OPEN_RESERVATION_COLUMNS} FROM ledger_reservations WHERE store_id = %s "
        "AND remaining > 0 AND expires_at IS NULL ORDER BY reservation_id LIMIT %s",
        [store_id, limit - len(dated)],
    )
    return dated + sorted(undated, key=lambda row: str(row["reservation_id"]))
