"""The entries behind one store and SKU's figures (CONTRACT §8, explain), read in one snapshot.

Each figure is decomposed into what makes it, and the decomposition adds up exactly:
- on_hand = the last count's qty (0 without one) + the units of the accepted entries after it
  that changed on_hand, grouped by type (reservations, releases and expiries change reserved
  only: they are under `reserved_by`; rejected entries change nothing);
- reserved = what each open reservation of the store still holds of the SKU;
- incoming = what each transfer to the store still has on its way (sent, less received);
- each channel's reserved (CONTRACT §6) = what the open reservations of that channel still hold.

Every read follows an index of the store and SKU (ledger/projections/schema.py), so its cost is
that store and SKU's own: its entries since its last count, its transfers in, and the open
reservations that hold it; never the log's size, nor the store's other reservations.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ledger.domain.model import EventType, Level, Policy
from ledger.domain.policy import Figures, effective_policy, figures
from ledger.projections.queries import store_policies
from ledger.sql import Row, SqlTx


@dataclass(frozen=True, slots=True)
class LastCount:
    position: int
    time: str  # the event's time, as its producer sent it
    recorded_at: str
    qty_units: int


@dataclass(frozen=True, slots=True)
class EntriesOfType:
    type: str
    units: int  # their on_hand deltas, summed
    entries: int


@dataclass(frozen=True, slots=True)
class ReservationHold:
    reservation_id: str
    order_id: str | None
    channel: str | None
    remaining_units: int
    expires_at: str | None


@dataclass(frozen=True, slots=True)
class TransferOnItsWay:
    transfer_id: str
    from_store: str | None  # None: received here under a transfer id no transfer to here sent
    remaining_units: int


@dataclass(frozen=True, slots=True)
class Explanation:
    store_id: str
    sku: str
    position: int  # the log's head in the snapshot every figure was read in
    level: Level
    policy: Figures  # safety stock, sellable and each channel's quota figures, as a stock answer's
    count: LastCount | None
    since: tuple[EntriesOfType, ...]
    reserved_by: tuple[ReservationHold, ...]
    incoming_from: tuple[TransferOnItsWay, ...]

    def assert_adds_up(self) -> None:
        """The contract's three sums; a decomposition that does not add up is a bug, never an answer."""
        counted = self.count.qty_units if self.count else 0
        on_hand = counted + sum(group.units for group in self.since)
        reserved = sum(hold.remaining_units for hold in self.reserved_by)
        incoming = sum(transfer.remaining_units for transfer in self.incoming_from)
        figures = (self.level.on_hand_units, self.level.reserved_units, self.level.incoming_units)
        assert (on_hand, reserved, incoming) == figures, (self.store_id, self.sku, figures)
        for channel, shown in self.policy.channels.items():
            held = sum(hold.remaining_units for hold in self.reserved_by if hold.channel == channel)
            assert held == shown.reserved_units, (self.store_id, self.sku, channel, shown)


class TooManyToExplain(Exception):
    """More open reservations or transfers hold the SKU than one answer lists (a named limit)."""

    def __init__(self, what: str, items_max: int) -> None:
        super().__init__(f"more than {items_max} {what}")
        self.what = what
        self.items_max = items_max


def explain(tx: SqlTx, store_id: str, sku: str, position: int, items_max: int) -> Explanation:
    """Reads everything in `tx`, which must be one snapshot, whose head is `position`."""
    row = tx.fetchone(
        "SELECT on_hand, reserved, incoming, channels FROM ledger_levels WHERE store_id = %s AND sku = %s",
        (store_id, sku),
    )
    level = (
        Level(
            int(row["on_hand"]),
            int(row["reserved"]),
            int(row["incoming"]),
            orjson.loads(row["channels"]) if row["channels"] else None,
        )
        if row
        else Level()
    )
    count = last_count(tx, store_id, sku)
    explanation = Explanation(
        store_id=store_id,
        sku=sku,
        position=position,
        level=level,
        policy=policy_figures(tx, store_id, sku, level),
        count=count,
        since=entries_since(tx, store_id, sku, count.position if count else 0),
        reserved_by=open_reservations(tx, store_id, sku, level, items_max),
        incoming_from=transfers_on_their_way(tx, store_id, sku, items_max),
    )
    explanation.assert_adds_up()
    return explanation


def policy_figures(tx: SqlTx, store_id: str, sku: str, level: Level) -> Figures:
    """Safety stock, sellable and the channels' figures (CONTRACT §6) under the policy that applies
    now, read in the same snapshot as the level."""
    stored = store_policies(tx, [store_id])[store_id]
    policies = {key: Policy.from_json(orjson.loads(text)) for key, text in stored.items()}
    return figures(level, effective_policy(policies, sku))


def last_count(tx: SqlTx, store_id: str, sku: str) -> LastCount | None:
    """The latest `stock.count` by position; its levels-after hold the counted qty. The type is a
    literal: the partial index `ledger_history_counts` answers only a query that names it."""
    row = tx.fetchone(
        "SELECT position, time, recorded_at, on_hand FROM ledger_history "
        f"WHERE store_id = %s AND sku = %s AND type = '{EventType.COUNT.value}' AND outcome = 'accepted' "
        "ORDER BY position DESC LIMIT 1",
        (store_id, sku),
    )
    if row is None:
        return None
    return LastCount(int(row["position"]), row["time"], row["recorded_at"], int(row["on_hand"]))


def entries_since(tx: SqlTx, store_id: str, sku: str, after_position: int) -> tuple[EntriesOfType, ...]:
    """The accepted entries after the count that changed on_hand, by type (a range of the index on
    store, SKU and position)."""
    rows = tx.fetchall(
        "SELECT type, CAST(SUM(on_hand_delta) AS BIGINT) AS units, COUNT(*) AS entries "
        "FROM ledger_history WHERE store_id = %s AND sku = %s AND position > %s "
        "AND outcome = 'accepted' AND on_hand_delta <> 0 GROUP BY type",
        (store_id, sku, after_position),
    )
    # Ordered here, not by the database: a collation could order the names otherwise.
    return tuple(
        sorted(
            (EntriesOfType(row["type"], int(row["units"]), int(row["entries"])) for row in rows),
            key=lambda group: group.type,
        )
    )


def open_reservations(
    tx: SqlTx, store_id: str, sku: str, level: Level, items_max: int
) -> tuple[ReservationHold, ...]:
    """The store's open reservations that still hold the SKU, oldest first: from the index of
    reservation lines when it can be trusted, else from every open reservation of the store."""
    holds = indexed_holds(tx, store_id, sku, level, items_max)
    return holds if holds is not None else open_reservations_scanned(tx, store_id, sku, items_max)


def indexed_holds(
    tx: SqlTx, store_id: str, sku: str, level: Level, items_max: int
) -> tuple[ReservationHold, ...] | None:
    """The holds as a range of the index of reservation lines (`ledger_reservation_lines_open`,
    schema.py), whatever the number of the store's open reservations; None when the index cannot
    be trusted for this store and SKU.

    The writer writes the index in the batch that changes a reservation, so it is exact unless
    something else wrote the reservations: an instance of the release before it, during a rolling
    upgrade. Its rows tell: a line whose position is not its reservation's is older than the
    reservation's last change, and a reservation the index lacks leaves the holds short of the
    level's reserved units (the level, read in the same snapshot, is the writer's own); a line can
    only stop holding units, never start again, so a stale line still holding them is older than
    its reservation's row. `ledger rebuild` makes the index whole again."""
    rows = tx.fetchall(
        "SELECT r.reservation_id, r.order_id, r.channel, r.expires_at, l.remaining, "
        "l.position AS line_position, r.position "
        "FROM ledger_reservation_lines l JOIN ledger_reservations r "
        "ON r.store_id = l.store_id AND r.reservation_id = l.reservation_id "
        "WHERE l.store_id = %s AND l.sku = %s AND l.remaining > 0 AND r.remaining > 0 "
        "ORDER BY l.placed_at_position, l.reservation_id LIMIT %s",
        (store_id, sku, items_max + 1),
    )
    if len(rows) > items_max:
        raise TooManyToExplain("open reservations", items_max)
    holds = tuple(_hold(row, int(row["remaining"])) for row in rows)
    if all(row["line_position"] == row["position"] for row in rows) and _hold_the_level(holds, level):
        return holds
    return None


def _hold(row: Row, remaining_units: int) -> ReservationHold:
    return ReservationHold(
        reservation_id=row["reservation_id"],
        order_id=row["order_id"],
        channel=row["channel"],
        remaining_units=remaining_units,
        expires_at=row["expires_at"],
    )


def _hold_the_level(holds: tuple[ReservationHold, ...], level: Level) -> bool:
    """The holds add up to the level's reserved units, and to each channel's."""
    if sum(hold.remaining_units for hold in holds) != level.reserved_units:
        return False
    by_channel: dict[str, int] = {}
    for hold in holds:
        if hold.channel is not None:
            by_channel[hold.channel] = by_channel.get(hold.channel, 0) + hold.remaining_units
    return by_channel == (level.channel_reserved or {})


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def open_reservations_scanned(
    tx: SqlTx, store_id: str, sku: str, items_max: int
) -> tuple[ReservationHold, ...]:
    """The same holds, from every open reservation of the store. A reservation's lines are JSON
    (`[[sku, qty, shipped, released], ...]`, ledger/projections/tables.py): LIKE narrows the rows
    to those naming the SKU (SQLite's LIKE ignores case), the lines decide."""
    rows = tx.fetchall(
        "SELECT reservation_id, order_id, channel, expires_at, lines, placed_at_position "
        "FROM ledger_reservations WHERE store_id = %s AND remaining > 0 AND lines LIKE %s ESCAPE '\\' "
        "ORDER BY placed_at_position, reservation_id LIMIT %s",
        (store_id, "%" + _like_escaped(orjson.dumps([sku]).decode()[:-1]) + ",%", items_max + 1),
    )
    if len(rows) > items_max:
        raise TooManyToExplain("open reservations", items_max)
    holds = []
    for row in rows:
        remaining_units = _remaining_of(row, sku)
        if remaining_units > 0:
            holds.append(_hold(row, remaining_units))
    return tuple(holds)


def _remaining_of(row: Row, sku: str) -> int:
    for line_sku, qty, shipped, released in orjson.loads(row["lines"]):
        if line_sku == sku:
            return int(qty) - int(shipped) - int(released)
    return 0


def transfers_on_their_way(
    tx: SqlTx, store_id: str, sku: str, items_max: int
) -> tuple[TransferOnItsWay, ...]:
    """Per transfer id, what was sent here (`stock.transfer_incoming`, whose reference names the
    sending store) less what was received under it; transfers fully received are left out. The
    condition `incoming_delta <> 0` is the partial index `ledger_history_incoming`'s."""
    rows = tx.fetchall(
        "SELECT transfer_id, CAST(SUM(incoming_delta) AS BIGINT) AS remaining, "
        f"MIN(CASE WHEN type = '{EventType.TRANSFER_INCOMING.value}' THEN reference END) AS from_store "
        "FROM ledger_history WHERE store_id = %s AND sku = %s AND incoming_delta <> 0 "
        "AND outcome = 'accepted' GROUP BY transfer_id HAVING SUM(incoming_delta) <> 0 LIMIT %s",
        (store_id, sku, items_max + 1),
    )
    if len(rows) > items_max:
        raise TooManyToExplain("transfers on their way", items_max)
    return tuple(
        sorted(
            (TransferOnItsWay(row["transfer_id"], row["from_store"], int(row["remaining"])) for row in rows),
            key=lambda transfer: transfer.transfer_id,
        )
    )
