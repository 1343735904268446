"""The projection tables, in SQL that PostgreSQL and SQLite both accept.

A history row has no SKU and no levels only for an event without lines that was refused (a
release of an unknown reservation): it stays in the audit trail all the same.

Times are stored as fixed-width UTC text (`2026-11-22T07:15:00.000000Z`), so that comparing the
text compares the instants, on both databases alike.
"""

PROJECTION_TABLES = (
    "ledger_levels",
    "ledger_history",
    "ledger_reservations",
    "ledger_event_keys",
)

DDL = (
    """CREATE TABLE IF NOT EXISTS ledger_levels (
        store_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        on_hand BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        incoming BIGINT NOT NULL,
        position BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (store_id, sku))""",
    "CREATE INDEX IF NOT EXISTS ledger_levels_by_sku ON ledger_levels (sku, store_id)",
    # No index on a level's position: an update that changes no indexed column is a HOT update on
    # PostgreSQL (no index entries written). Caches catch up from the history instead, by position.
    # Earlier versions had one, and a table of per-SKU totals (now summed from the levels when
    # asked: the view below); dropped here so that an old database is brought up to date.
    "DROP INDEX IF EXISTS ledger_levels_by_position",
    "DROP TABLE IF EXISTS ledger_sku_totals",
    """CREATE TABLE IF NOT EXISTS ledger_history (
        position BIGINT NOT NULL,
        line_no INTEGER NOT NULL,
        store_id TEXT NOT NULL,
        sku TEXT,
        event_id TEXT NOT NULL,
        source TEXT NOT NULL,
        type TEXT NOT NULL,
        time TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        on_hand_delta BIGINT NOT NULL,
        reserved_delta BIGINT NOT NULL,
        incoming_delta BIGINT NOT NULL,
        on_hand BIGINT,
        reserved BIGINT,
        incoming BIGINT,
        oversold BOOLEAN NOT NULL,
        unknown_reservation BOOLEAN NOT NULL,
        order_id TEXT,
        reservation_id TEXT,
        reference TEXT,
        transfer_id TEXT,
        adjustment_reason TEXT,
        principal TEXT,
        PRIMARY KEY (position, line_no))""",
    "CREATE INDEX IF NOT EXISTS ledger_history_by_store ON ledger_history (store_id, position)",
    "CREATE INDEX IF NOT EXISTS ledger_history_by_sku ON ledger_history (store_id, sku, position)",
    # Partial indexes: most entries have no order, and reservations without expiry are never due.
    """CREATE INDEX IF NOT EXISTS ledger_history_by_order ON ledger_history (store_id, order_id)
        WHERE order_id IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS ledger_history_by_reservation
        ON ledger_history (store_id, reservation_id) WHERE reservation_id IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS ledger_history_by_time ON ledger_history (recorded_at, position)",
    # Explain (ledger/projections/explain.py): a store and SKU's last count, and the entries that
    # moved its incoming (transfers in, and their receipts), found without walking its history.
    # Partial: only those entries pay for them when recorded.
    """CREATE INDEX IF NOT EXISTS ledger_history_counts ON ledger_history (store_id, sku, position)
        WHERE type = 'stock.count'""",
    """CREATE INDEX IF NOT EXISTS ledger_history_incoming
        ON ledger_history (store_id, sku, transfer_id) WHERE incoming_delta <> 0""",
    """CREATE TABLE IF NOT EXISTS ledger_reservations (
        store_id TEXT NOT NULL,
        reservation_id TEXT NOT NULL,
        order_id TEXT,
        expires_at TEXT,
        lines TEXT NOT NULL,
        closed_as TEXT,
        status TEXT NOT NULL,
        remaining BIGINT NOT NULL,
        placed_at_position BIGINT NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (store_id, reservation_id))""",
    """CREATE INDEX IF NOT EXISTS ledger_reservations_due
        ON ledger_reservations (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS ledger_reservations_by_position
        ON ledger_reservations (position)""",
    # Explain: the open reservations of a store, without those closed long ago.
    """CREATE INDEX IF NOT EXISTS ledger_reservations_open
        ON ledger_reservations (store_id, reservation_id) WHERE remaining > 0""",
    """CREATE TABLE IF NOT EXISTS ledger_event_keys (
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        shortfall TEXT,
        PRIMARY KEY (source, event_id))""",
)

# Columns added after their table was first made: a database made before gets them on start
# (on SQLite, ledger/storage/recorders.py adds them; it has no ADD COLUMN IF NOT EXISTS). The rows
# recorded before have null there, which is what those columns mean for them.
ADDED_COLUMNS = (("ledger_history", "principal", "TEXT"),)


def _pg_add_column(table: str, column: str, sql_type: str) -> str:
    """Checked first, like the fillfactor below: the ALTER would wait behind a running VACUUM."""
    return f"""DO $ledger$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                       AND table_name = '{table}' AND column_name = '{column}') THEN
            ALTER TABLE {table} ADD COLUMN {column} {sql_type};
        END IF;
    END $ledger$"""


# Totals per SKU across stores, for operators' SQL; the API sums the same rows (queries.py).
# Written per database: PostgreSQL has no CREATE VIEW IF NOT EXISTS, SQLite no OR REPLACE.
TOTALS_VIEW_SELECT = """ledger_totals AS SELECT sku, CAST(SUM(on_hand) AS BIGINT) AS on_hand,
    CAST(SUM(reserved) AS BIGINT) AS reserved, CAST(SUM(incoming) AS BIGINT) AS incoming,
    MAX(position) AS position, MAX(updated_at) AS updated_at FROM ledger_levels GROUP BY sku"""
POSTGRES_DDL = (
    *DDL,
    *(_pg_add_column(*added) for added in ADDED_COLUMNS),
    f"CREATE OR REPLACE VIEW {TOTALS_VIEW_SELECT}",
    # Room in each page for a level's next version: its update then stays a HOT update (measured:
    # 2% of level updates were HOT with full pages). Applies to pages written from now on.
    # Checked first: the ALTER waits behind a running VACUUM, and starts happen often.
    """DO $ledger$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = 'ledger_levels'::regclass
                       AND reloptions @> ARRAY['fillfactor=50']) THEN
            ALTER TABLE ledger_levels SET (fillfactor = 50);
        END IF;
    END $ledger$""",
)
SQLITE_DDL = (*DDL, f"CREATE VIEW IF NOT EXISTS {TOTALS_VIEW_SELECT}")
