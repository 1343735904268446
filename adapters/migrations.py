"""Every change made to the adapters' own tables (adapters/schema.py), in order, recorded in
`adapter_schema_versions`: the same rule as the ledger's migrations (ledger/storage/migrations.py:
expand, then contract; never edit or renumber one that has shipped), applied by the same migrator
whenever the adapters open the database.

Migration 1 makes the tables as they are today, each `IF NOT EXISTS`: on a database whose tables
an earlier release made before versions were recorded, it finds them there and only records itself.
"""

from __future__ import annotations

from adapters.schema import DDL
from ledger.storage.migrations import EXPAND, Migration
from ledger.storage.migrator import SchemaHistory

# When an inbox delivery that failed is tried again (adapters/inbound.py): NULL, at once.
_INBOX_NEXT_ATTEMPT = "ALTER TABLE adapter_inbox ADD COLUMN next_attempt_at TEXT"
# Where a reading back by time got to (adapters/moysklad_catchup.py), by name.
_CURSORS = (
    "CREATE TABLE IF NOT EXISTS adapter_cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL, "
    "updated_at TEXT NOT NULL)"
)
# The customer orders the ledger made in MoySklad (or saw deleted there), and the reservations each
# carries (adapters/moysklad_order_book.py).
_MOYSKLAD_ORDERS = (
    "CREATE TABLE IF NOT EXISTS adapter_moysklad_orders (order_uuid TEXT PRIMARY KEY, "
    "deleted_at TEXT, recorded_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS adapter_moysklad_order_reservations (order_uuid TEXT NOT NULL, "
    "reservation_id TEXT NOT NULL, store_id TEXT NOT NULL, order_id TEXT NOT NULL, "
    "recorded_at TEXT NOT NULL, PRIMARY KEY (order_uuid, reservation_id))",
)
# The picking orders asked of the WMS whose answer is not kept yet (adapters/wms_requests.py).
_WMS_REQUESTS = (
    "CREATE TABLE IF NOT EXISTS adapter_wms_requests (external_id TEXT PRIMARY KEY, store_id TEXT NOT NULL, "
    "reservation_id TEXT NOT NULL, order_id TEXT, zone TEXT NOT NULL, lines TEXT NOT NULL, "
    "body TEXT NOT NULL, sent_at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS adapter_wms_requests_by_reservation "
    "ON adapter_wms_requests (store_id, reservation_id)",
)
# When a report's apply began (adapters/reconcile_runs.py): reports over its stores wait for it to end.
_RECONCILE_APPLY_STARTED = "ALTER TABLE adapter_reconcile_runs ADD COLUMN apply_started_at TEXT"

# The book of MoySklad orders keyed by the reservation's store too (adapters/moysklad_order_book.py),
# filled from migration 4's table, whose key (order_uuid, reservation_id) keeps out the part of an
# order at a second ledger store sharing its MoySklad store under the same reservation id. A new
# table rather than a new key on the old one: the release before books with
# `ON CONFLICT (order_uuid, reservation_id)`, which fails once no unique key matches it, so it keeps
# its table (this release writes it too, and reads what the release before wrote there during a
# rollout) until a contract step drops it. The fill writes nothing twice when run again; the book
# holds only open orders and those ended within the retention, so it is one statement.
_MOYSKLAD_BOOKED_BY_STORE = (
    "CREATE TABLE IF NOT EXISTS adapter_moysklad_booked_reservations (order_uuid TEXT NOT NULL, "
    "store_id TEXT NOT NULL, reservation_id TEXT NOT NULL, order_id TEXT NOT NULL, "
    "recorded_at TEXT NOT NULL, PRIMARY KEY (order_uuid, store_id, reservation_id))",
    # `WHERE 1 = 1`: after a bare FROM, SQLite would take ON CONFLICT's ON for a join's (a parsing
    # ambiguity its documentation names).
    "INSERT INTO adapter_moysklad_booked_reservations (order_uuid, store_id, reservation_id, order_id, "
    "recorded_at) SELECT order_uuid, store_id, reservation_id, order_id, recorded_at "
    "FROM adapter_moysklad_order_reservations WHERE 1 = 1 ON CONFLICT DO NOTHING",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the adapters' tables: positions, parked items, outbox, mappings, units, status map, inbox, "
        "WMS orders and receipts, journal, reconcile runs and lines, MoySklad demands",
        EXPAND,
        postgres=DDL,
        sqlite=DDL,
    ),
    Migration(
        2,
        "the inbox's next attempt of a delivery that failed, so that its retries are spaced in time",
        EXPAND,
        postgres=(_INBOX_NEXT_ATTEMPT,),
        sqlite=(_INBOX_NEXT_ATTEMPT,),
    ),
    Migration(
        3,
        "the cursors of readings back by time: MoySklad's demands, caught up after lost notifications",
        EXPAND,
        postgres=(_CURSORS,),
        sqlite=(_CURSORS,),
    ),
    Migration(
        4,
        "the customer orders the ledger made in MoySklad and their reservations, so that a deleted "
        "one is known by its href",
        EXPAND,
        postgres=_MOYSKLAD_ORDERS,
        sqlite=_MOYSKLAD_ORDERS,
    ),
    Migration(
        5,
        "the picking orders asked of the WMS whose answer is not kept yet, so that a release cancels "
        "an order made before a timeout or a crash",
        EXPAND,
        postgres=_WMS_REQUESTS,
        sqlite=_WMS_REQUESTS,
    ),
    Migration(
        6,
        "when a reconciliation report's apply began, so that an apply that stopped partway keeps other "
        "reports over its stores from being applied, with no lock held while it records",
        EXPAND,
        postgres=(_RECONCILE_APPLY_STARTED,),
        sqlite=(_RECONCILE_APPLY_STARTED,),
    ),
    Migration(
        7,
        "the MoySklad orders' reservations keyed by their store too, filled from migration 4's, so "
        "that a deleted order at a MoySklad store two ledger stores share releases both parts",
        EXPAND,
        postgres=_MOYSKLAD_BOOKED_BY_STORE,
        sqlite=_MOYSKLAD_BOOKED_BY_STORE,
    ),
)

# The adapters' tables are written by the adapters alone, never by the ledger's writers: their
# migrations need not stop the writers.
ADAPTERS_SCHEMA = SchemaHistory("adapter_schema_versions", MIGRATIONS, takes_write_lock=False)
