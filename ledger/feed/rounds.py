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
every SKU of that store without a policy of its own: each gets a record at that position.
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
    """The next round after a position, or None when nothing was committed after it."""
    rows = rows_after(tx, after_position, rows_max)
    if not rows:
        return None
    end_position = int(rows[-1]["position"])
    newest: dict[tuple[str, str], Row] = {}  # (store, SKU) -> its last row that changed something
    defaults: dict[str, Row] = {}  # store -> its last change of the default policy
    for row in rows:
        if not changed(row):
            continue
        if row["sku"] == DEFAULT_SKU:
            defaults[row["store_id"]] = row
        else:
            newest[(row["store_id"], row["sku"])] = row
    stores = sorted({store_id for store_id, _ in newest} | set(defaults))
    policies = _Policies(tx, stores) if stores else None
    records: dict[tuple[str, str], LevelRecord] = {}
    for (store_id, sku), row in newest.items():
        assert policies is not None
        position = int(row["position"])
        policy = policies.applying(store_id, sku, position)
        records[(store_id, sku)] = record_of(store_id, sku, position, _level(row), policy, row["recorded_at"])
    for store_id, row in defaults.items():
        assert policies is not None
        for record in _default_changed(tx, policies, store_id, row, records):
            records[(store_id, record.sku)] = record
    ordered = sorted(records.values(), key=lambda r: (r.position, r.store_id, r.sku))
    return Round(after_position, end_position, ordered, len(rows))


def _default_changed(
    tx: SqlTx, policies: _Policies, store_id: str, row: Row, records: dict[tuple[str, str], LevelRecord]
) -> list[LevelRecord]:
    """A record at the default's change for each SKU of the store that follows the default then
    and has no later record in this round."""
    position = int(row["position"])
    found = []
    for level_row in tx.fetchall(
        "SELECT sku, on_hand, reserved, incoming, channels, position FROM ledger_levels "
        "WHERE store_id = %s ORDER BY sku",
        (store_id,),
    ):
        sku = level_row["sku"]
        later = records.get((store_id, sku))
        if later is not None and later.position > position:
            continue
        if policies.own(store_id, sku, position) is not None:
            continue  # its own policy applies: the default changes nothing of it
        if int(level_row["position"]) <= position:
            level = _level(level_row)
        else:  # changed since: its levels as they were then
            then = queries.levels_at(tx, store_id, [sku], position).get(sku)
            level = _level(then) if then is not None else Level()
        found.append(
            record_of(
                store_id, sku, position, level, policies.applying(store_id, sku, position), row["recorded_at"]
            )
        )
    return found
