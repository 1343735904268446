"""The adapters' own tables, in SQL that PostgreSQL and SQLite both accept.

They live in the ledger's database but belong to the adapters alone: the ledger never reads them,
and `ledger rebuild` never touches them. Times are fixed-width UTC text, as in ledger/projections/schema.py.
"""

from __future__ import annotations

ADAPTER_TABLES = (
    "adapter_positions",
    "adapter_parked",
    "adapter_outbox",
    "adapter_mappings",
    "adapter_units",
    "adapter_status_map",
    "adapter_inbox",
    "adapter_wms_orders",
    "adapter_wms_inbound",
    "adapter_journal",
    "adapter_reconcile_runs",
    "adapter_reconcile_lines",
    "adapter_moysklad_demands",
)

DDL = (
    # One row per outbound target: where in the ledger's log it has pushed up to, and its counters.
    """CREATE TABLE IF NOT EXISTS adapter_positions (
        adapter TEXT NOT NULL PRIMARY KEY,
        position BIGINT NOT NULL,
        pushed_total BIGINT NOT NULL,
        failures_total BIGINT NOT NULL,
        parked_total BIGINT NOT NULL,
        last_error TEXT,
        last_push_at TEXT,
        lease_owner TEXT,
        lease_until TEXT,
        updated_at TEXT NOT NULL)""",
    # Items that kept failing: kept with their reason, retried only when an operator asks.
    """CREATE TABLE IF NOT EXISTS adapter_parked (
        adapter TEXT NOT NULL,
        item_key TEXT NOT NULL,
        position BIGINT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        payload TEXT NOT NULL,
        parked_at TEXT NOT NULL,
        retry_requested INTEGER NOT NULL,
        PRIMARY KEY (adapter, item_key))""",
    # Items not derived from the log (e.g. an order status for Bitrix); newest payload per key wins.
    """CREATE TABLE IF NOT EXISTS adapter_outbox (
        adapter TEXT NOT NULL,
        item_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        version BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (adapter, item_key))""",
    # SKU <-> product/offer/variant ids, store <-> external store, SKU -> WMS zone.
    """CREATE TABLE IF NOT EXISTS adapter_mappings (
        system TEXT NOT NULL,
        kind TEXT NOT NULL,
        local_id TEXT NOT NULL,
        external_id TEXT NOT NULL,
        external_type TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (system, kind, local_id))""",
    "CREATE INDEX IF NOT EXISTS adapter_mappings_by_external ON adapter_mappings (system, kind, external_id)",
    # One external unit = factor base units (a box of 12: factor 12). Per system and SKU.
    """CREATE TABLE IF NOT EXISTS adapter_units (
        system TEXT NOT NULL,
        sku TEXT NOT NULL,
        uom TEXT NOT NULL,
        factor BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (system, sku))""",
    # An external status (e.g. the WMS's PICKING_ERROR) -> the status to set elsewhere, and an action.
    """CREATE TABLE IF NOT EXISTS adapter_status_map (
        system TEXT NOT NULL,
        external_status TEXT NOT NULL,
        target_status TEXT NOT NULL,
        action TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (system, external_status))""",
    # Webhook deliveries, stored before they are answered; the delivery id makes redelivery a no-op.
    """CREATE TABLE IF NOT EXISTS adapter_inbox (
        source TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL,
        processed_at TEXT,
        attempts INTEGER NOT NULL,
        last_error TEXT,
        PRIMARY KEY (source, delivery_id))""",
    "CREATE INDEX IF NOT EXISTS adapter_inbox_pending ON adapter_inbox (processed_at, received_at)",
    # Picking orders created in the WMS, one customer order (reservation) -> one per zone.
    """CREATE TABLE IF NOT EXISTS adapter_wms_orders (
        external_id TEXT NOT NULL PRIMARY KEY,
        wms_order_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        reservation_id TEXT NOT NULL,
        order_id TEXT,
        zone TEXT NOT NULL,
        lines TEXT NOT NULL,
        status TEXT NOT NULL,
        final INTEGER NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS adapter_wms_orders_by_reservation
        ON adapter_wms_orders (store_id, reservation_id)""",
    "CREATE INDEX IF NOT EXISTS adapter_wms_orders_open ON adapter_wms_orders (final, updated_at)",
    # Transfers into a WMS warehouse announced as expected receipts (adapters/wms_inbound.py).
    """CREATE TABLE IF NOT EXISTS adapter_wms_inbound (
        external_id TEXT NOT NULL PRIMARY KEY,
        wms_inbound_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        transfer_id TEXT NOT NULL,
        lines TEXT NOT NULL,
        status TEXT NOT NULL,
        final INTEGER NOT NULL,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS adapter_wms_inbound_open ON adapter_wms_inbound (final, updated_at)",
    # What the adapters did that an operator must see: alerts, status changes, parked items.
    """CREATE TABLE IF NOT EXISTS adapter_journal (
        at TEXT NOT NULL,
        adapter TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS adapter_journal_by_time ON adapter_journal (at)",
    # Reconciliation reports by run id: what was shown for review, and when it was applied.
    """CREATE TABLE IF NOT EXISTS adapter_reconcile_runs (
        run_id TEXT NOT NULL PRIMARY KEY,
        source TEXT NOT NULL,
        description TEXT NOT NULL,
        master TEXT NOT NULL,
        stores TEXT NOT NULL,
        absent_as_zero INTEGER NOT NULL,
        compared BIGINT NOT NULL,
        ledger_skus BIGINT NOT NULL,
        untouched TEXT NOT NULL,
        created_at TEXT NOT NULL,
        applied_at TEXT,
        applied_events BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS adapter_reconcile_lines (
        run_id TEXT NOT NULL,
        store_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        ledger_units BIGINT NOT NULL,
        external_units BIGINT NOT NULL,
        PRIMARY KEY (run_id, store_id, sku))""",
    # What the ledger was told each MoySklad demand holds (moysklad_demands.py): its store and lines
    # as JSON, the revision that recorded them, and the events of that revision until submitted.
    """CREATE TABLE IF NOT EXISTS adapter_moysklad_demands (
        demand_id TEXT NOT NULL PRIMARY KEY,
        revision INTEGER NOT NULL,
        holding TEXT NOT NULL,
        pending TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
)
