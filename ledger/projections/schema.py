"""The projection tables, in SQL that PostgreSQL and SQLite both accept.

A history row has no SKU and no levels only for an event without lines that was refused (a
release of an unknown reservation): it stays in the audit trail all the same.

Times are stored as fixed-width UTC text (`2026-11-22T07:15:00.000000Z`), so that comparing the
text compares the instants, on both databases alike. A history row keeps its event's `time` as sent
(with the producer's offset) and, for business-time reads (CONTRACT §7), the same instant as UTC
text in `occurred_at`.

Every read of a history row that must not grow with the log has an index that matches its filter
and its order (see ledger/projections/queries.py; tests/integration/test_read_plans.py checks the
plans on both databases): a store's pages (store, position, line), a SKU's pages and past levels
(store, SKU, position, line), business time (store, SKU, occurred_at, position, line), recorded
time (recorded_at, position) of each event's first row.
"""

PROJECTION_TABLES = (
    "ledger_levels",
    "ledger_history",
    "ledger_reservations",
    "ledger_event_keys",
    "ledger_policies",
    "ledger_history_codes",
    "ledger_reservation_lines",
)

# `as_of` and a timeline's bounds on recorded time (queries.position_at): one step down this index.
# One entry per event, not per line: every row of an event shares its position and recording time,
# and its first row has line_no 0 (tables.py, _history_rows). An event of 2.7 lines writes one
# entry here instead of 2.7 (4.7% less WAL an imported event on a database made by this release;
# bench/README.md). Migration 13 makes it, on every database; those made before it keep
# `ledger_history_by_time`, unused but still written, until a contract migration of the next
# release drops it.
EVENTS_BY_TIME_INDEX = """CREATE INDEX IF NOT EXISTS ledger_history_events_by_time
    ON ledger_history (recorded_at, position) WHERE line_no = 0"""
# A store's policy changes of one key (a SKU or `*`), by position and by business time: the policy
# in force at a position (as_of, position, the feed's records) or at an event time (occurred_as_of)
# is one step down one of them, where the SKU's own indexes walked back over every movement of it
# since that change. Partial: policy changes are few, and only they pay for these.
POLICY_CHANGES_INDEXES = (
    """CREATE INDEX IF NOT EXISTS ledger_history_policy_changes
    ON ledger_history (store_id, sku, position, line_no) WHERE type = 'stock.policy_changed'""",
    """CREATE INDEX IF NOT EXISTS ledger_history_policy_changes_occurred
    ON ledger_history (store_id, sku, occurred_at, position, line_no) WHERE type = 'stock.policy_changed'""",
)
# A store's entries recorded past what it held, in log order (`?oversold=true` on the history): few
# among many, so a partial index, a range of them rather than a walk of the store's whole history.
OVERSOLD_INDEX = """CREATE INDEX IF NOT EXISTS ledger_history_oversold
    ON ledger_history (store_id, position, line_no) WHERE oversold"""

# The tables as this release makes them where they are absent (migration 1, ledger/storage/migrations.py):
# a new database gets today's shape at once; one made by an earlier release keeps its tables, and the
# later migrations add what they lack.
TABLES_DDL = (
    """CREATE TABLE IF NOT EXISTS ledger_levels (
        store_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        on_hand BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        incoming BIGINT NOT NULL,
        position BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        channels TEXT,
        PRIMARY KEY (store_id, sku))""",
    "CREATE INDEX IF NOT EXISTS ledger_levels_by_sku ON ledger_levels (sku, store_id)",
    """CREATE TABLE IF NOT EXISTS ledger_history (
        position BIGINT NOT NULL,
        line_no INTEGER NOT NULL,
        store_id TEXT NOT NULL,
        sku TEXT,
        event_id TEXT NOT NULL,
        source TEXT NOT NULL,
        type TEXT NOT NULL,
        time TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
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
        channel TEXT,
        channels TEXT,
        policy TEXT,
        codes TEXT,
        PRIMARY KEY (position, line_no))""",
    # With line_no, a page's cursor `(position, line_no) > (P, L)` and its order are one index
    # range on both databases (the earlier (store_id[, sku], position) indexes, dropped by
    # SUPERSEDED_DROPS, left them a filter and a sort, or a backward walk of the primary key).
    """CREATE INDEX IF NOT EXISTS ledger_history_by_store_position
        ON ledger_history (store_id, position, line_no)""",
    """CREATE INDEX IF NOT EXISTS ledger_history_by_sku_position
        ON ledger_history (store_id, sku, position, line_no)""",
    # Partial indexes: most entries have no order, and reservations without expiry are never due.
    """CREATE INDEX IF NOT EXISTS ledger_history_by_order ON ledger_history (store_id, order_id)
        WHERE order_id IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS ledger_history_by_reservation
        ON ledger_history (store_id, reservation_id) WHERE reservation_id IS NOT NULL""",
    # (The index of events by recorded time is migration 13's alone, EVENTS_BY_TIME_INDEX: on
    # PostgreSQL it is built while writes go on, even on a database that migration 1 adopts.)
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
        channel TEXT,
        PRIMARY KEY (store_id, reservation_id))""",
    """CREATE INDEX IF NOT EXISTS ledger_reservations_due
        ON ledger_reservations (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS ledger_reservations_by_position
        ON ledger_reservations (position)""",
    # The open reservations of a store: explain's (those holding a SKU) and the console's (soonest
    # expiry first, ledger/api/console/queries.py), without those closed long ago.
    """CREATE INDEX IF NOT EXISTS ledger_reservations_open
        ON ledger_reservations (store_id, expires_at, reservation_id) WHERE remaining > 0""",
    """CREATE TABLE IF NOT EXISTS ledger_event_keys (
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        shortfall TEXT,
        PRIMARY KEY (source, event_id))""",
)

# GET /v1/reservations/{id}: the parts of a reservation across stores (CONTRACT §6).
RESERVATIONS_BY_ID_INDEX = """CREATE INDEX IF NOT EXISTS ledger_reservations_by_id
    ON ledger_reservations (reservation_id, store_id)"""

POLICIES_DDL = (
    # Each store's current policies (CONTRACT §6), one row per SKU or default (`*`) ever set; a
    # cleared one keeps its row with a null policy, so that a cache catching up by position sees
    # the clearing too. The history has every change (type stock.policy_changed, column policy).
    """CREATE TABLE IF NOT EXISTS ledger_policies (
        store_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        policy TEXT,
        position BIGINT NOT NULL,
        PRIMARY KEY (store_id, sku))""",
    "CREATE INDEX IF NOT EXISTS ledger_policies_by_position ON ledger_policies (position)",
)

# CONTRACT §10: every marking code a history row carries, so that `?code=X` is one index range
# (the store and the code, in position order) whatever the length of the log. The row's own
# `codes` column (JSON, in the line's order) is what the history shows.
HISTORY_CODES_DDL = """CREATE TABLE IF NOT EXISTS ledger_history_codes (
    store_id TEXT NOT NULL,
    code TEXT NOT NULL,
    position BIGINT NOT NULL,
    line_no INTEGER NOT NULL,
    PRIMARY KEY (store_id, code, position, line_no))"""
HISTORY_CODES_COLUMN = ("ledger_history", "codes", "TEXT")  # CONTRACT §10: the line's codes, JSON

# Explain's open reservations of a store and SKU (ledger/projections/explain.py): one row per line of
# every reservation, what it still holds, and the position of the reservation's last change (its
# row's `position` in ledger_reservations, written in the same batch). The partial index holds the
# lines still holding units, in placement order, so a store and SKU's are one range of it, however
# many reservations the store holds open; a reservation's `lines` JSON could only be scanned.
RESERVATION_LINES_DDL = (
    """CREATE TABLE IF NOT EXISTS ledger_reservation_lines (
        store_id TEXT NOT NULL,
        reservation_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        remaining BIGINT NOT NULL,
        placed_at_position BIGINT NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (store_id, reservation_id, sku))""",
    """CREATE INDEX IF NOT EXISTS ledger_reservation_lines_open
        ON ledger_reservation_lines (store_id, sku, placed_at_position, reservation_id)
        WHERE remaining > 0""",
)
# A database made before gets a row for every line of every reservation it holds (the writer writes
# every line of each reservation it changes, and the rebuild every reservation's; the fill agrees
# with both). A reservation's lines are `[[sku, qty, shipped, released], ...]` (tables.py). (`WHERE
# true`: SQLite would read ON CONFLICT as the join's condition.)
_RESERVATION_LINES_FILL = """INSERT INTO ledger_reservation_lines
    (store_id, reservation_id, sku, remaining, placed_at_position, position)
    SELECT r.store_id, r.reservation_id, {sku}, {qty} - {shipped} - {released},
        r.placed_at_position, r.position
    FROM {reservations} r {lines}
    WHERE true ON CONFLICT (store_id, reservation_id, sku) DO NOTHING"""
_PG_LINES = {
    "sku": "l.line->>0",
    "qty": "(l.line->>1)::bigint",
    "shipped": "(l.line->>2)::bigint",
    "released": "(l.line->>3)::bigint",
    "lines": "CROSS JOIN LATERAL jsonb_array_elements(r.lines::jsonb) AS l(line)",
}
PG_RESERVATION_LINES_FILL = _RESERVATION_LINES_FILL.format(reservations="ledger_reservations", **_PG_LINES)
# The same fill on PostgreSQL, one step of at most %(rows)s reservations after the key
# (%(store)s, %(reservation)s) in the table's key order: it answers the last key it filled, or no
# row once the table is done (ledger/storage/migrator.py runs it until then).
PG_RESERVATION_LINES_FILL_STEP = f"""WITH chunk AS (
        SELECT store_id, reservation_id, lines, placed_at_position, position FROM ledger_reservations
        WHERE (store_id, reservation_id) > (%(store)s, %(reservation)s)
        ORDER BY store_id, reservation_id LIMIT %(rows)s),
    filled AS ({_RESERVATION_LINES_FILL.format(reservations="chunk", **_PG_LINES)})
    SELECT store_id, reservation_id FROM chunk ORDER BY store_id DESC, reservation_id DESC LIMIT 1"""
SQLITE_RESERVATION_LINES_FILL = _RESERVATION_LINES_FILL.format(
    reservations="ledger_reservations",
    sku="json_extract(l.value, '$[0]')",
    qty="json_extract(l.value, '$[1]')",
    shipped="json_extract(l.value, '$[2]')",
    released="json_extract(l.value, '$[3]')",
    lines="JOIN json_each(r.lines) AS l",
)

# What earlier releases had and this one no longer uses (a contract migration drops them):
# - an index on a level's position: an update that changes no indexed column is a HOT update on
#   PostgreSQL (no index entries written); caches catch up from the history instead, by position;
# - a table of per-SKU totals, now summed from the levels when asked (the view below);
# - the history's (store_id[, sku], position) indexes, superseded by the ones with line_no.
SUPERSEDED_DROPS = (
    "DROP INDEX IF EXISTS ledger_levels_by_position",
    "DROP TABLE IF EXISTS ledger_sku_totals",
    "DROP INDEX IF EXISTS ledger_history_by_store",
    "DROP INDEX IF EXISTS ledger_history_by_sku",
)

# Columns added after their table was first made: a database made before gets them from a migration
# (ledger/storage/migrations.py; SQLite has no ADD COLUMN IF NOT EXISTS, so it checks first). The rows
# recorded before have null there, which is what those columns mean for them.
# Channels and policies (CONTRACT §6): a level's and a history row's reserved units per channel
# (`channels`, JSON, null when none), an event's `channel`, a policy change's `policy` (JSON).
ADDED_COLUMNS = (
    ("ledger_history", "principal", "TEXT"),
    ("ledger_history", "channel", "TEXT"),
    ("ledger_history", "channels", "TEXT"),
    ("ledger_history", "policy", "TEXT"),
    ("ledger_levels", "channels", "TEXT"),
    ("ledger_reservations", "channel", "TEXT"),
)

# occurred_at (CONTRACT §7) was added later too, but every row needs it: a database made before
# gets the column, filled from each row's `time`, in the same transaction (so a migration that
# fails half way leaves no row without it). The fill gives what ledger.clock.utc_text gives.
OCCURRED_AT_FROM_TIME_PG = (
    "to_char(time::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
)
# SQLite's strftime keeps milliseconds only: the microseconds are taken from the text (Python's
# isoformat writes six digits, or none when they are zero).
OCCURRED_AT_FROM_TIME_SQLITE = (
    "strftime('%Y-%m-%dT%H:%M:%S', time) || '.' || "
    "CASE WHEN substr(time, 20, 1) = '.' THEN substr(time, 21, 6) ELSE '000000' END || 'Z'"
)
# Made once the column exists.
OCCURRED_INDEXES = (
    """CREATE INDEX IF NOT EXISTS ledger_history_by_sku_occurred
        ON ledger_history (store_id, sku, occurred_at, position, line_no)""",
)


# Totals per SKU across stores, for operators' SQL; the API sums the same rows (queries.py).
# Written per database: PostgreSQL has no CREATE VIEW IF NOT EXISTS, SQLite no OR REPLACE.
TOTALS_VIEW_SELECT = """ledger_totals AS SELECT sku, CAST(SUM(on_hand) AS BIGINT) AS on_hand,
    CAST(SUM(reserved) AS BIGINT) AS reserved, CAST(SUM(incoming) AS BIGINT) AS incoming,
    MAX(position) AS position, MAX(updated_at) AS updated_at FROM ledger_levels GROUP BY sku"""
PG_TOTALS_VIEW = f"CREATE OR REPLACE VIEW {TOTALS_VIEW_SELECT}"
SQLITE_TOTALS_VIEW = f"CREATE VIEW IF NOT EXISTS {TOTALS_VIEW_SELECT}"

PG_LEVELS_TUNING = (
    # The console's search by the start of a SKU (ledger/api/console/queries.py) is a range in byte
    # order, whatever collation the database was made with: in a linguistic one (en_US) the range
    # from P to P + '~' need not hold every SKU that starts with P. SQLite compares bytes already.
    # Its columns never change, so a level's update stays a HOT update.
    'CREATE INDEX IF NOT EXISTS ledger_levels_by_sku_bytes ON ledger_levels (sku COLLATE "C", store_id)',
    # Room in each page for a level's next version: its update then stays a HOT update (measured:
    # 2% of level updates were HOT with full pages). Applies to pages written from now on.
    # Checked first: the ALTER waits behind a running VACUUM.
    """DO $ledger$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = 'ledger_levels'::regclass
                       AND reloptions @> ARRAY['fillfactor=50']) THEN
            ALTER TABLE ledger_levels SET (fillfactor = 50);
        END IF;
    END $ledger$""",
)
