"""One store and SKU's levels after each entry in a window, thinned to a maximum (CONTRACT §8).

Two time axes. On the recorded axis (the default) a point is a history row and its levels are the
row's own levels-after: the window is a range of positions, found like `?as_of=` finds one
(ledger/projections/queries.py: position_at), so that the last point's levels are the `as_of=to`
levels. On the event-time axis (`occurred`) the points are the entries whose event time is in the
window, in event-time order (then position), and their levels are the running sums of the
deltas in that order: the `?occurred_as_of=` levels at each point (CONTRACT §7), as recorded now,
or with `through_position`, as recorded up to that position (on both axes, no entry after it).

Thinning keeps the first row of each of `points_max` equal runs of the window's rows, by rank:
row i of n is kept when floor(i·(m−1)/(n−1)) steps up, which keeps exactly m rows, the first
and the last among them, every (n−1)/(m−1) rows. It runs in the database, so only the kept rows
travel; the database still reads every row of the window (of that store and SKU, never the rest
of the log) to count and rank them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ledger.projections.queries import position_at, position_before
from ledger.sql import Row, SqlTx

Axis = Literal["recorded", "occurred"]
# What a point names of its entry beyond the levels: who sent it, from where, and what for (the
# console shows them when a point is pointed at).
ENTRY_COLUMNS = "event_id, source, reference, principal, order_id, reservation_id, reason"
POINT_COLUMNS = (
    f"position, line_no, time, occurred_at, recorded_at, type, outcome, {ENTRY_COLUMNS}, on_hand, reserved"
)


@dataclass(frozen=True, slots=True)
class TimelineWindow:
    store_id: str
    sku: str
    axis: Axis = "recorded"
    from_: str | None = None  # fixed-width UTC text, inclusive
    to: str | None = None  # fixed-width UTC text, inclusive
    through_position: int | None = None  # the log as it stood at this position: no entry after it


def _thinned(ranked_sql: str) -> str:
    """Keeps the rows of `ranked_sql` (with i = rank from 0 and n = count) that thinning keeps."""
    return (
        f"SELECT {POINT_COLUMNS}, n FROM ({ranked_sql}) ranked WHERE n <= CAST(%s AS BIGINT) OR i = 0 "
        "OR (i * CAST(%s - 1 AS BIGINT)) / NULLIF(n - 1, 0) "
        "> ((i - 1) * CAST(%s - 1 AS BIGINT)) / NULLIF(n - 1, 0) ORDER BY i"
    )


def _recorded(tx: SqlTx, window: TimelineWindow) -> tuple[str, list[object]]:
    after = position_before(tx, window.from_) if window.from_ is not None else 0
    through = position_at(tx, window.to) if window.to is not None else None
    sql = (
        f"SELECT {POINT_COLUMNS}, ROW_NUMBER() OVER (ORDER BY position, line_no) - 1 AS i, "
        "COUNT(*) OVER () AS n FROM ledger_history WHERE store_id = %s AND sku = %s AND position > %s"
    )
    params: list[object] = [window.store_id, window.sku, after]
    for bound in (through, window.through_position):
        if bound is not None:
            sql += " AND position <= %s"
            params.append(bound)
    return sql, params


_OCCURRED_ORDER = "ORDER BY occurred_at, position, line_no"


def _occurred(window: TimelineWindow) -> tuple[str, list[object]]:
    running = f"OVER ({_OCCURRED_ORDER} ROWS UNBOUNDED PRECEDING)"
    summed = (
        f"SELECT position, line_no, time, occurred_at, recorded_at, type, outcome, {ENTRY_COLUMNS}, "
        f"CAST(SUM(on_hand_delta) {running} AS BIGINT) AS on_hand, "
        f"CAST(SUM(reserved_delta) {running} AS BIGINT) AS reserved "
        "FROM ledger_history WHERE store_id = %s AND sku = %s"
    )
    params: list[object] = [window.store_id, window.sku]
    if window.to is not None:
        summed += " AND occurred_at <= %s"
        params.append(window.to)
    if window.through_position is not None:
        summed += " AND position <= %s"
        params.append(window.through_position)
    sql = (
        f"SELECT {POINT_COLUMNS}, ROW_NUMBER() OVER ({_OCCURRED_ORDER}) - 1 AS i, "
        f"COUNT(*) OVER () AS n FROM ({summed}) summed"
    )
    if window.from_ is not None:
        sql += " WHERE occurred_at >= %s"
        params.append(window.from_)
    return sql, params


def timeline_points(tx: SqlTx, window: TimelineWindow, points_max: int) -> list[Row]:
    """The window's points, oldest first on its axis: at most `points_max` (at least 2), each
    with `n`, how many entries the window held."""
    assert points_max >= 2, points_max  # the first and the last are always kept
    ranked, params = _recorded(tx, window) if window.axis == "recorded" else _occurred(window)
    return tx.fetchall(_thinned(ranked), [*params, points_max, points_max, points_max])
