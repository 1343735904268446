"""Reads of the projections: levels now and then, totals, history pages, reservations.

None of them grows with the log: each is an index range (ledger/projections/schema.py), and what
it reads grows at most with the entries of the store and SKU asked about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ledger.sql import Deferred, Row, SqlTx


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    store_id: str
    sku: str | None = None
    type: str | None = None
    order_id: str | None = None
    reservation_id: str | None = None
    recorded_from: str | None = None  # fixed-width UTC text, inclusive
    recorded_to: str | None = None  # fixed-width UTC text, inclusive
    occurred_from: str | None = None  # the event's time, fixed-width UTC text, inclusive
    occurred_to: str | None = None  # the event's time, fixed-width UTC text, inclusive
    code: str | None = None  # CONTRACT §10: the entries that carry this marking code
    oversold: bool | None = None  # the entries recorded past what their store held (or the others)
    after_position: int = 0
    after_line_no: int = -1


def current_levels(tx: SqlTx, store_id: str, skus: list[str]) -> dict[str, Row]:
    return current_levels_sent(tx, store_id, skus)()


def current_levels_sent(tx: SqlTx, store_id: str, skus: list[str]) -> Callable[[], dict[str, Row]]:
    """current_levels, sent now and read by the function returned (tx.defer: in pipeline mode,
    with the reads sent beside it in one round trip)."""
    reads = [
        tx.defer(f"SELECT * FROM ledger_levels WHERE store_id = %s AND {condition}", [store_id, *params])
        for condition, params in tx.values_in("sku", skus)
    ]
    return lambda: {row["sku"]: row for read in reads for row in read.rows()}


def levels_at(tx: SqlTx, store_id: str, skus: list[str], position: int) -> dict[str, Row]:
    """The levels after the last entry at or before `position`, from the history's levels-after."""
    found: dict[str, Row] = {}
    for sku in skus:
        row = tx.fetchone(
            "SELECT sku, on_hand, reserved, incoming, channels, position, recorded_at AS updated_at "
            "FROM ledger_history WHERE store_id = %s AND sku = %s AND position <= %s "
            "AND outcome = 'accepted' ORDER BY position DESC, line_no DESC LIMIT 1",
            (store_id, sku, position),
        )
        if row is not None:
            found[sku] = row
    return found


def store_policies(tx: SqlTx, store_ids: list[str]) -> dict[str, dict[str, str]]:
    """Each store's current policies as stored (JSON text), by SKU or `*`; {} for a store without."""
    return store_policies_sent(tx, store_ids)()


def store_policies_sent(tx: SqlTx, store_ids: list[str]) -> Callable[[], dict[str, dict[str, str]]]:
    """store_policies, sent now and read by the function returned (as current_levels_sent)."""
    reads = [
        tx.defer(
            f"SELECT store_id, sku, policy FROM ledger_policies WHERE {condition} AND policy IS NOT NULL",
            params,
        )
        for condition, params in tx.values_in("store_id", store_ids)
    ]

    def found() -> dict[str, dict[str, str]]:
        policies: dict[str, dict[str, str]] = {store_id: {} for store_id in store_ids}
        for read in reads:
            for row in read.rows():
                policies[row["store_id"]][row["sku"]] = row["policy"]
        return policies

    return found


def policies_changed(tx: SqlTx, after_position: int, to_position: int) -> list[Row]:
    """The policies set or cleared (policy null) in a range of positions, oldest first."""
    return tx.fetchall(
        "SELECT store_id, sku, policy, position FROM ledger_policies "
        "WHERE position > %s AND position <= %s ORDER BY position",
        (after_position, to_position),
    )


def policies_at(tx: SqlTx, store_id: str, skus: list[str], position: int) -> dict[str, str]:
    """The policies of these SKUs (and of `*`) as they were after `position`, as stored (JSON
    text), from the history's policy changes; a key cleared by then, or never set, is absent."""
    return _last_policies(tx, store_id, skus, "position", position)


def _last_policies(
    tx: SqlTx, store_id: str, skus: list[str], axis: Literal["position", "occurred_at"], bound: int | str
) -> dict[str, str]:
    """Each key's policy from its last change at or before `bound` on `axis`: one step down a
    partial index of the policy changes (schema.py, POLICY_CHANGES_INDEXES)."""
    order = "position DESC" if axis == "position" else "occurred_at DESC, position DESC"
    found: dict[str, str] = {}
    for sku in [*skus, "*"]:
        row = tx.fetchone(
            f"SELECT policy FROM ledger_history WHERE store_id = %s AND sku = %s AND {axis} <= %s "
            "AND type = 'stock.policy_changed' AND outcome = 'accepted' "
            f"ORDER BY {order}, line_no DESC LIMIT 1",
            (store_id, sku, bound),
        )
        if row is not None and row["policy"] is not None:
            found[sku] = row["policy"]
    return found


def position_at(tx: SqlTx, recorded_at: str) -> int:
    """The position of the last entry recorded at or before that moment (0: none), by recorded
    time and then position: one step down the index of events by time (schema.py,
    EVENTS_BY_TIME_INDEX: each event's first row, line_no 0). Entries are stamped
    just before their batch takes the write lock, so two instances' batches may be stamped out of
    position order by the time one waits for the other's lock; within that the latest stamp
    decides (MAX(position) over the stamps would have walked the whole log back to that moment)."""
    row = tx.fetchone(
        "SELECT position FROM ledger_history WHERE line_no = 0 AND recorded_at <= %s "
        "ORDER BY recorded_at DESC, position DESC LIMIT 1",
        (recorded_at,),
    )
    return int(row["position"]) if row else 0


def position_before(tx: SqlTx, recorded_at: str) -> int:
    """The position of the last entry recorded before that moment (0: none): see position_at."""
    row = tx.fetchone(
        "SELECT position FROM ledger_history WHERE line_no = 0 AND recorded_at < %s "
        "ORDER BY recorded_at DESC, position DESC LIMIT 1",
        (recorded_at,),
    )
    return int(row["position"]) if row else 0


def levels_occurred_at(tx: SqlTx, store_id: str, skus: list[str], occurred_at: str) -> dict[str, Row]:
    """CONTRACT §7: the sums of the deltas of every entry whose event time is at or before
    `occurred_at`, as recorded now (refused entries have zero deltas), with the position and the
    recording time of the latest of them. One index range per SKU (store, SKU, occurred_at): it
    reads that SKU's entries up to that moment, never the rest of the log."""
    found: dict[str, Row] = {}
    for sku in skus:
        row = tx.fetchone(
            "SELECT CAST(SUM(on_hand_delta) AS BIGINT) AS on_hand, "
            "CAST(SUM(reserved_delta) AS BIGINT) AS reserved, "
            "CAST(SUM(incoming_delta) AS BIGINT) AS incoming, "
            "MAX(position) AS position, MAX(recorded_at) AS updated_at "
            "FROM ledger_history WHERE store_id = %s AND sku = %s AND occurred_at <= %s",
            (store_id, sku, occurred_at),
        )
        if row is not None and row["position"] is not None:
            found[sku] = row
    return found


def policies_occurred_at(tx: SqlTx, store_id: str, skus: list[str], occurred_at: str) -> dict[str, str]:
    """`policies_at` in business time: the policies of these SKUs (and of `*`) set by the last
    policy change at or before `occurred_at` (a change's event time is when it was made)."""
    return _last_policies(tx, store_id, skus, "occurred_at", occurred_at)


def channels_occurred_at(
    tx: SqlTx, store_id: str, skus: list[str], occurred_at: str
) -> dict[str, dict[str, int]]:
    """CONTRACT §6's reserved units per channel in business time: each SKU's reserved deltas at or
    before `occurred_at` under reservations of a channel (a reservation's channel is its placing
    event's, kept with it: its shipments, releases and expiry name none), by channel; a SKU whose
    channels hold nothing then is absent."""
    found: dict[str, dict[str, int]] = {}
    for sku in skus:
        # The SKU's range of its business-time index, each row's reservation then found by its
        # primary key (a join let PostgreSQL hash every reservation of the store instead).
        rows = tx.fetchall(
            "SELECT channel, CAST(SUM(reserved_delta) AS BIGINT) AS reserved FROM ("
            "SELECT (SELECT r.channel FROM ledger_reservations r WHERE r.store_id = h.store_id "
            "AND r.reservation_id = h.reservation_id) AS channel, h.reserved_delta "
            "FROM ledger_history h WHERE h.store_id = %s AND h.sku = %s AND h.occurred_at <= %s "
            "AND h.reserved_delta <> 0"  # (not `reservation_id IS NOT NULL`: that chose the index
            # of the store's reservation rows, whatever their SKU; a row without one finds none)
            ") AS moved WHERE channel IS NOT NULL GROUP BY channel",
            (store_id, sku, occurred_at),
        )
        held = {str(row["channel"]): int(row["reserved"]) for row in rows if int(row["reserved"])}
        if held:
            found[sku] = held
    return found


def by_store_id(rows: list[Row]) -> list[Row]:
    """Rows by store id as Python compares ids: by code point, as SQLite orders text. PostgreSQL's
    ORDER BY uses the database's collation, and a linguistic one (en_US.UTF-8, the usual default)
    puts `s-B` after `sa`: the same ledger would list its stores in another order per database."""
    return sorted(rows, key=lambda row: str(row["store_id"]))


def sku_across_stores(tx: SqlTx, sku: str) -> list[Row]:
    """Every store's level of one SKU (their sum is the SKU's total: the view ledger_totals), by
    store id (by_store_id)."""
    return by_store_id(sku_across_stores_sent(tx, sku).rows())


def sku_across_stores_sent(tx: SqlTx, sku: str) -> Deferred:
    """sku_across_stores, sent now and read later (as current_levels_sent), in no order: the
    reader puts the rows in order (by_store_id)."""
    return tx.defer("SELECT * FROM ledger_levels WHERE sku = %s", (sku,))


def sku_across_stores_occurred_at(tx: SqlTx, sku: str, occurred_at: str) -> list[Row]:
    """Every store that holds a level of the SKU, with its levels at that event time
    (levels_occurred_at; zeros where nothing had happened yet): an index range per store. By store
    id (by_store_id)."""
    return by_store_id(
        tx.fetchall(
            "SELECT l.store_id, CAST(COALESCE(SUM(h.on_hand_delta), 0) AS BIGINT) AS on_hand, "
            "CAST(COALESCE(SUM(h.reserved_delta), 0) AS BIGINT) AS reserved, "
            "CAST(COALESCE(SUM(h.incoming_delta), 0) AS BIGINT) AS incoming, "
            "MAX(h.position) AS position, MAX(h.recorded_at) AS updated_at "
            "FROM ledger_levels l LEFT JOIN ledger_history h "
            "ON h.store_id = l.store_id AND h.sku = l.sku AND h.occurred_at <= %s "
            "WHERE l.sku = %s GROUP BY l.store_id",
            (occurred_at, sku),
        )
    )


def history_page(tx: SqlTx, where: HistoryFilter, limit: int) -> list[Row]:
    """Entries oldest first after the cursor; returns up to limit + 1 rows (the extra says 'more')."""
    # The cursor as `position >= P` and a filter that drops the lines of P up to L: both databases
    # start a range of the index (store_id[, sku], position, line_no) or of the primary key at P,
    # and estimate its rows from the statistics of `position`. `position > P OR (position = P AND
    # line_no > L)` was a filter on every row of the store; a row value `(position, line_no) >
    # (P, L)` is a range too, but PostgreSQL guesses a third of the table for it.
    if where.code is not None:
        # A code's rows: a range of ledger_history_codes (store, code, position, line_no), each row
        # then found by the history's primary key; the other filters apply to those few rows
        # (their columns are the history's alone, so they need no table name).
        sql = [
            "SELECT h.* FROM ledger_history_codes c JOIN ledger_history h "
            "ON h.position = c.position AND h.line_no = c.line_no "
            "WHERE c.store_id = %s AND c.code = %s",
            "AND c.position >= %s AND NOT (c.position = %s AND c.line_no <= %s)",
        ]
        params: list[object] = [
            where.store_id,
            where.code,
            where.after_position,
            where.after_position,
            where.after_line_no,
        ]
    else:
        sql = [
            "SELECT * FROM ledger_history WHERE store_id = %s",
            "AND position >= %s AND NOT (position = %s AND line_no <= %s)",
        ]
        params = [where.store_id, where.after_position, where.after_position, where.after_line_no]
    if where.sku is not None:
        sql.append("AND sku = %s")
        params.append(where.sku)
    for column, value in (
        ("type", where.type),
        ("order_id", where.order_id),
        ("reservation_id", where.reservation_id),
    ):
        if value is not None:
            sql.append(f"AND {column} = %s")
            params.append(value)
    if where.oversold is not None:
        # Written out, not a parameter: only `oversold` itself matches the partial index's predicate.
        sql.append("AND oversold" if where.oversold else "AND NOT oversold")
    if where.recorded_from is not None:
        sql.append("AND recorded_at >= %s")
        params.append(where.recorded_from)
    if where.recorded_to is not None:
        sql.append("AND recorded_at <= %s")
        params.append(where.recorded_to)
    if where.occurred_from is not None:
        sql.append("AND occurred_at >= %s")
        params.append(where.occurred_from)
    if where.occurred_to is not None:
        sql.append("AND occurred_at <= %s")
        params.append(where.occurred_to)
    # The order of the index the range walks (the other filters name only history columns).
    order = "c.position, c.line_no" if where.code is not None else "position, line_no"
    sql.append(f"ORDER BY {order} LIMIT %s")
    params.append(limit + 1)
    return tx.fetchall(" ".join(sql), params)


def reservations_by_id(tx: SqlTx, reservation_id: str, stores_max: int) -> list[Row]:
    """Every store's reservation under one id (a reservation across stores' parts), by store id
    (by_store_id); at most `stores_max` (by the index on reservation_id: the caller asks for one
    more than it answers, and refuses when it finds it, so which ones a limit cuts off never shows)."""
    return by_store_id(
        tx.fetchall(
            "SELECT * FROM ledger_reservations WHERE reservation_id = %s LIMIT %s",
            (reservation_id, stores_max),
        )
    )


def reservations_at(tx: SqlTx, reservation_id: str, stores: list[str]) -> list[Row]:
    """The reservations under one id at these stores, each read by its key, by store: exactly the
    parts asked for, however many other stores hold the id (ids are unique per store only)."""
    keys = [(store, reservation_id) for store in dict.fromkeys(stores)]
    deferred = tx.read_by_keys("ledger_reservations", "*", ("store_id", "reservation_id"), keys)
    return by_store_id([row for part in deferred for row in part.rows()])


def stores_placed_at(tx: SqlTx, reservation_id: str, position: int) -> list[str]:
    """The stores where the event at `position` placed a reservation under this id (a reservation
    across stores' parts): its history rows, a range of the primary key."""
    rows = tx.fetchall(
        "SELECT DISTINCT store_id FROM ledger_history WHERE position = %s AND reservation_id = %s "
        "AND type = 'stock.reservation' AND outcome = 'accepted'",
        (position, reservation_id),
    )
    return [row["store_id"] for row in rows]


def accepted_at(tx: SqlTx, source: str, event_id: str) -> int | None:
    """The position of the event recorded under this key, if it was recorded and accepted."""
    row = tx.fetchone(
        "SELECT position FROM ledger_event_keys WHERE source = %s AND event_id = %s AND outcome = %s",
        (source, event_id, "accepted"),
    )
    return int(row["position"]) if row else None


def stores_with_available(tx: SqlTx, skus: list[str], stores_max: int) -> list[str]:
    """The stores where any of these SKUs has available stock, by id, at most `stores_max`
    (by the levels' index on sku): the only stores a sourcing search could ever choose.

    "By id" is by code point on both databases (CONTRACT §6 orders the default candidates by id,
    and the search is decided by their order): SQLite compares text as bytes, and PostgreSQL
    would use the database's collation, which can be language-aware ("b-2" before "B-1")."""
    marks = ", ".join(["%s"] * len(skus))
    by_id = "store_id" if tx.qmark else 'store_id COLLATE "C"'
    rows = tx.fetchall(
        f"SELECT store_id FROM ledger_levels WHERE sku IN ({marks}) AND on_hand > reserved "
        f"GROUP BY store_id ORDER BY {by_id} LIMIT %s",
        (*skus, stores_max),
    )
    return [row["store_id"] for row in rows]


def reservation(tx: SqlTx, store_id: str, reservation_id: str) -> Row | None:
    return tx.fetchone(
        "SELECT * FROM ledger_reservations WHERE store_id = %s AND reservation_id = %s",
        (store_id, reservation_id),
    )
