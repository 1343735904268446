"""What the feed publishes after a position: the committed history rows that follow it, coalesced
into one record per store and SKU with its newest figures (CONTRACT §9).

Why the history and not the writer's batches: the history is committed in position order (the
log's write lock), so reading the rows after a position can never see a batch before it commits,
never skip one, and reads the same whatever instance wrote them. A round is a range of whole
events (positions), at most `rows_max` rows, unless one event alone has more.

Each record carries the levels after its last row (the history's levels-after) and the policy
that applied at that position. A policy is read from `ledger_policies` when that key has not
changed since the position (its row's position is not later), else from the history's policy
changes (queries.policies_at). A change of a store's default policy (`*`) changes the figures of
every SKU of that store without a policy of its own: each gets a record at that position. Those
are read in pages of the store's levels (a store may have any number of SKUs), so a round ends
at such a change, and its own records of that store's SKUs that follow the default give way to
the change's records.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ledger.domain.model import DEFAULT_SKU, EventType, Level, Policy
from ledger.domain.policy import effective_policy
from ledger.feed.record import LevelRecord, record_of
from ledger.projections import queries
from ledger.sql import Row, SqlTx
from ledger.state_cache import policy_from_text

ROW_COLUMNS = (
    "position, line_no, store_id, sku, type, outcome, on_hand_delta, reserved_delta, incoming_delta, "
    "on_hand, reserved, incoming, channels, recorded_at"
)
POLICY_CHANGED = EventType.POLICY_CHANGED.value


@dataclass(frozen=True, slots=True)
class Round:
    """The records of the events after `after_position` up to `end_position`, in position order
    (a store's records in the order of their positions; one event's in store and SKU order)."""

    after_position: int
    end_position: int
    records: list[LevelRecord]
    rows_read: int
    default_change: DefaultChange | None = None


def rows_after(tx: SqlTx, after_position: int, rows_max: int) -> list[Row]:
    """The history rows of whole events after a position, oldest first: up to `rows_max` rows, or
    every row of the first event when it alone has more. The primary key (position, line_no) is
    the index: one range from the position."""
    rows = tx.fetchall(
        f"SELECT {ROW_COLUMNS} FROM ledger_history WHERE position > %s ORDER BY position, line_no LIMIT %s",
        (after_position, rows_max + 1),
    )
    if len(rows) <= rows_max:
        return rows
    last = rows[-1]["position"]
    whole = [row for row in rows if row["position"] != last]
    if whole:
        return whole
    return tx.fetchall(
        f"SELECT {ROW_COLUMNS} FROM ledger_history WHERE position = %s ORDER BY line_no", (last,)
    )


def changed(row: Row) -> bool:
    """Did this row change a figure of its store and SKU? Refused events and no-ops did not."""
    if row["outcome"] != "accepted" or row["sku"] is None:
        return False
    if row["type"] == POLICY_CHANGED:
        return True
    return bool(row["on_hand_delta"] or row["reserved_delta"] or row["incoming_delta"])


class _Policies:
    """The policies of one round's stores as of any position, read once per store."""

    def __init__(self, tx: SqlTx, store_ids: list[str]) -> None:
        self.tx = tx
        self.current: dict[str, dict[str, tuple[str | None, int]]] = {store_id: {} for store_id in store_ids}
        for condition, params in tx.values_in("store_id", store_ids):
            for row in tx.fetchall(
                f"SELECT store_id, sku, policy, position FROM ledger_policies WHERE {condition}", params
            ):
                self.current[row["store_id"]][row["sku"]] = (row["policy"], int(row["position"]))
        self._past: dict[tuple[str, str, int], Policy | None] = {}

    def own(self, store_id: str, key: str, position: int) -> Policy | None:
        """The policy of that key (a SKU or `*`) after `position`, None when none was set then."""
        stored, changed_at = self.current[store_id].get(key, (None, 0))
        if changed_at <= position:
            return policy_from_text(stored) if stored is not None else None
        remembered = (store_id, key, position)
        if remembered not in self._past:
            text = queries.policies_at(self.tx, store_id, [key], position).get(key)
            self._past[remembered] = policy_from_text(text) if text is not None else None
        return self._past[remembered]

    def applying(self, store_id: str, sku: str, position: int) -> Policy | None:
        by_key = {}
        for key in (sku, DEFAULT_SKU):
            policy = self.own(store_id, key, position)
            if policy is not None:
                by_key[key] = policy
        return effective_policy(by_key, sku)


def _level(row: Row) -> Level:
    channels = row["channels"]
    return Level(
        int(row["on_hand"]),
        int(row["reserved"]),
        int(row["incoming"]),
        orjson.loads(channels) if channels else None,
    )


def read_round(tx: SqlTx, after_position: int, rows_max: int) -> Round | None:
    """The next round after a position, or None when nothing was committed after it. A round ends
    at the first change of a store's default policy it meets: the records that change gives are
    read after the round's own, in pages (default_change_page)."""
    rows = rows_after(tx, after_position, rows_max)
    if not rows:
        return None
    default_row = next((row for row in rows if changed(row) and row["sku"] == DEFAULT_SKU), None)
    if default_row is not None:
        rows = [row for row in rows if row["position"] <= default_row["position"]]
    newest: dict[tuple[str, str], Row] = {}  # (store, SKU) -> its last row that changed something
    for row in rows:
        if changed(row) and row["sku"] != DEFAULT_SKU:
            newest[(row["store_id"], row["sku"])] = row
    stores = sorted({store_id for store_id, _ in newest})
    policies = _Policies(tx, stores)
    records = []
    default_change = None
    if default_row is not None:
        default_change = DefaultChange(
            default_row["store_id"], int(default_row["position"]), default_row["recorded_at"]
        )
    for (store_id, sku), row in newest.items():
        position = int(row["position"])
        if (
            default_change is not None
            and store_id == default_change.store_id
            and policies.own(store_id, sku, default_change.position) is None
        ):
            continue  # its newest figures come with the default's change, after this round
        policy = policies.applying(store_id, sku, position)
        records.append(record_of(store_id, sku, position, _level(row), policy, row["recorded_at"]))
    records.sort(key=lambda r: (r.position, r.store_id, r.sku))
    return Round(after_position, int(rows[-1]["position"]), records, len(rows), default_change)


@dataclass(frozen=True, slots=True)
class DefaultChange:
    """A change of a store's default policy (`*`) at `position`, the last event of its round."""

    store_id: str
    position: int
    recorded_at: str


@dataclass(frozen=True, slots=True)
class Page:
    records: list[LevelRecord]
    last_sku: str | None  # where the next page starts after; None: this was the last page


def default_change_page(tx: SqlTx, change: DefaultChange, after_sku: str, skus_max: int) -> Page:
    """The records a change of a store's default policy gives, for the store's SKUs after
    `after_sku` (at most `skus_max` of them, in SKU order): one at the change's position for each
    SKU that has a level or has had a policy of its own, and has none then. (A SKU that only ever
    had a policy has a record, of its policy's figures: left out, its record kept the figures of
    before the change.) Each page is the first `skus_max` of either table after `after_sku`, so
    it reads no more rows than it returns, twice."""
    store_id, position = change.store_id, change.position
    policies = _Policies(tx, [store_id])
    rows = tx.fetchall(
        "SELECT k.sku, l.on_hand, l.reserved, l.incoming, l.channels, l.position FROM ("
        "SELECT sku FROM (SELECT sku FROM ledger_levels WHERE store_id = %s AND sku > %s "
        "ORDER BY sku LIMIT %s) AS levelled "
        "UNION SELECT sku FROM (SELECT sku FROM ledger_policies WHERE store_id = %s AND sku > %s "
        "AND sku <> %s ORDER BY sku LIMIT %s) AS ruled"
        ") AS k LEFT JOIN ledger_levels l ON l.store_id = %s AND l.sku = k.sku ORDER BY k.sku LIMIT %s",
        (store_id, after_sku, skus_max, store_id, after_sku, DEFAULT_SKU, skus_max, store_id, skus_max),
    )
    records = []
    for row in rows:
        sku = row["sku"]
        if policies.own(store_id, sku, position) is not None:
            continue  # its own policy applies: the default changes nothing of it
        if row["position"] is None:  # never moved: a policy's record, of zero levels
            level = Level()
        elif int(row["position"]) <= position:
            level = _level(row)
        else:  # changed since: its levels as they were then
            then = queries.levels_at(tx, store_id, [sku], position).get(sku)
            level = _level(then) if then is not None else Level()
        policy = policies.applying(store_id, sku, position)
        records.append(record_of(store_id, sku, position, level, policy, change.recorded_at))
    return Page(records, rows[-1]["sku"] if len(rows) == skus_max else None)
