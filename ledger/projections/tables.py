"""Writes one batch of recorded entries into the projection tables.

The writer calls this inside the transaction that records the events, so the projections are
never behind the log; `ledger rebuild` writes the same rows from the batches it replays from the
log (write_batch on SQLite and while catching up; the bulk load below while filling on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from ledger.clock import utc_text
from ledger.domain.frozen_values import frozen_value
from ledger.domain.model import DEFAULT_SKU, Entry, EventType, Level, Outcome, Policy, Reservation
from ledger.domain.rules import LedgerState
from ledger.sql import BulkInsert, SqlTx


@frozen_value
class RecordedEntry:
    position: int  # its event's: the notification id of the event's last entry
    entry: Entry
    levels_after: tuple[Level, ...]  # one per effect, in line order
    recorded_at: str
    # A rebuild that replays the log by store in several processes (ledger/rebuild/parts.py) sees
    # only some of an event's entries. `line_no_from`, when set, is its first history row's line_no
    # (else the rows go on from the event's entries before it in the batch, from 0); `key_elsewhere`
    # says the event's last entry, whose event key is recorded, is another process's.
    line_no_from: int | None = None
    key_elsewhere: bool = False


@dataclass(slots=True)
class ProjectionBatch:
    recorded: list[RecordedEntry] = field(default_factory=list)
    # The final value of every level and reservation the batch changed, with the position (and
    # time) of the entry that changed it last. The values are the replay state's own objects.
    levels: dict[tuple[str, str], tuple[Level, int, str]] = field(default_factory=dict)
    reservations: dict[tuple[str, str], tuple[Reservation, int]] = field(default_factory=dict)
    # Reservations placed by this batch: inserted, not upserted, so that an id already in the
    # table fails the transaction instead of being overwritten (see the writer's optimistic path).
    placed: set[tuple[str, str]] = field(default_factory=set)
    # The policies the batch set or cleared (None), by (store, SKU or DEFAULT_SKU), with the
    # position of the change.
    policies: dict[tuple[str, str], tuple[Policy | None, int]] = field(default_factory=dict)

    def add(self, recorded: RecordedEntry, state: LedgerState) -> None:
        """Adds an entry that has been applied to `state`. The writer and the rebuild both come here,
        so they agree on what an entry changed. The entries of one event are added one after the
        other, in log order, with the event's position."""
        self.recorded.append(recorded)
        entry = recorded.entry
        if entry.outcome is not Outcome.ACCEPTED:
            return
        if entry.event.type is EventType.POLICY_CHANGED:
            [line] = entry.event.lines
            self.policies[(entry.store_id, line.sku)] = (entry.event.policy, recorded.position)
            return
        for effect in entry.effects:
            if effect.on_hand_delta or effect.reserved_delta or effect.incoming_delta:
                key = (entry.store_id, effect.sku)
                self.levels[key] = (state.levels[key], recorded.position, recorded.recorded_at)
        if entry.event.reservation_id:
            key = (entry.store_id, entry.event.reservation_id)
            held = state.reservations.get(key)
            if held is not None:
                self.reservations[key] = (held, recorded.position)
                if entry.event.type is EventType.RESERVATION:
                    self.placed.add(key)


_HISTORY_COLUMNS = [
    ("position", "bigint"),
    ("line_no", "int"),
    ("store_id", "text"),
    ("sku", "text"),
    ("event_id", "text"),
    ("source", "text"),
    ("type", "text"),
    ("time", "text"),
    ("occurred_at", "text"),
    ("recorded_at", "text"),
    ("outcome", "text"),
    ("reason", "text"),
    ("on_hand_delta", "bigint"),
    ("reserved_delta", "bigint"),
    ("incoming_delta", "bigint"),
    ("on_hand", "bigint"),
    ("reserved", "bigint"),
    ("incoming", "bigint"),
    ("oversold", "boolean"),
    ("unknown_reservation", "boolean"),
    ("order_id", "text"),
    ("reservation_id", "text"),
    ("reference", "text"),
    ("transfer_id", "text"),
    ("adjustment_reason", "text"),
    ("principal", "text"),
    ("channel", "text"),
    ("channels", "text"),
    ("policy", "text"),
    ("codes", "text"),  # the last: see _HISTORY_CODES_COLUMN
]
_HISTORY = BulkInsert("history", "ledger_history", _HISTORY_COLUMNS)

# CONTRACT §10: one row per marking code of a history row, for `?code=X` (schema.py).
_CODES = BulkInsert(
    "history_codes",
    "ledger_history_codes",
    [("store_id", "text"), ("code", "text"), ("position", "bigint"), ("line_no", "int")],
)

_LEVELS = BulkInsert(
    "levels",
    "ledger_levels",
    [
        ("store_id", "text"),
        ("sku", "text"),
        ("on_hand", "bigint"),
        ("reserved", "bigint"),
        ("incoming", "bigint"),
        ("position", "bigint"),
        ("updated_at", "text"),
        ("channels", "text"),
    ],
    """ON CONFLICT (store_id, sku) DO UPDATE SET on_hand = excluded.on_hand,
    reserved = excluded.reserved, incoming = excluded.incoming,
    position = excluded.position, updated_at = excluded.updated_at, channels = excluded.channels""",
)

_RESERVATION_COLUMNS = [
    ("store_id", "text"),
    ("reservation_id", "text"),
    ("order_id", "text"),
    ("expires_at", "text"),
    ("lines", "text"),
    ("closed_as", "text"),
    ("status", "text"),
    ("remaining", "bigint"),
    ("placed_at_position", "bigint"),
    ("position", "bigint"),
    ("channel", "text"),
]

_RESERVATIONS = BulkInsert(
    "reservations",
    "ledger_reservations",
    _RESERVATION_COLUMNS,
    """ON CONFLICT (store_id, reservation_id) DO UPDATE SET lines = excluded.lines,
    closed_as = excluded.closed_as, status = excluded.status, remaining = excluded.remaining,
    position = excluded.position""",
)

_NEW_RESERVATIONS = BulkInsert(
    "new_reservations", "ledger_reservations", _RESERVATION_COLUMNS
)  # placed: never upserted

# Explain's index of reservation lines (schema.py): every line of each reservation the batch changed,
# upserted, so that a line that stops holding units leaves the index's open range; a placed one's
# inserted, as its reservation is (measured: the upsert costs 2 µs more a line on PostgreSQL).
_RESERVATION_LINE_COLUMNS = [
    ("store_id", "text"),
    ("reservation_id", "text"),
    ("sku", "text"),
    ("remaining", "bigint"),
    ("placed_at_position", "bigint"),
    ("position", "bigint"),
]

_RESERVATION_LINES = BulkInsert(
    "reservation_lines",
    "ledger_reservation_lines",
    _RESERVATION_LINE_COLUMNS,
    """ON CONFLICT (store_id, reservation_id, sku) DO UPDATE SET remaining = excluded.remaining,
    position = excluded.position""",
)

_NEW_RESERVATION_LINES = BulkInsert(
    "new_reservation_lines", "ledger_reservation_lines", _RESERVATION_LINE_COLUMNS
)  # placed: never upserted

_KEYS = BulkInsert(
    "event_keys",
    "ledger_event_keys",
    [
        ("source", "text"),
        ("event_id", "text"),
        ("position", "bigint"),
        ("outcome", "text"),
        ("reason", "text"),
        ("shortfall", "text"),
    ],
)


_POLICIES = BulkInsert(
    "policies",
    "ledger_policies",
    [("store_id", "text"), ("sku", "text"), ("policy", "text"), ("position", "bigint")],
    """ON CONFLICT (store_id, sku) DO UPDATE SET policy = excluded.policy,
    position = excluded.position""",
)


# Every insert write_batch makes, in the order it makes them (a one-statement batch on PostgreSQL
# calls a function made of these: ledger/storage/recorders.py).
BATCH_INSERTS = (
    _HISTORY,
    _CODES,
    _LEVELS,
    _NEW_RESERVATIONS,
    _RESERVATIONS,
    _NEW_RESERVATION_LINES,
    _RESERVATION_LINES,
    _KEYS,
    _POLICIES,
)


def channels_text(level: Level) -> str | None:
    """A level's reserved units per channel as stored (JSON), or None when no channel holds any."""
    return orjson.dumps(level.channel_reserved).decode() if level.channel_reserved else None


def policy_text(policy: Policy | None) -> str | None:
    return orjson.dumps(policy.as_json()).decode() if policy is not None else None


def write_batch(tx: SqlTx, batch: ProjectionBatch, into: Mapping[str, str] | None = None) -> None:
    """At most one statement per table whatever the batch size (on PostgreSQL they travel with the
    COMMIT). `into` names other tables to write instead of the projections (`ledger rebuild`'s
    shadow tables, which have the same columns and keys)."""

    def insert(bulk: BulkInsert) -> BulkInsert:
        return bulk.into(into[bulk.table]) if into else bulk

    history = _history_rows(batch)
    insert(_HISTORY).run(tx, history)
    insert(_CODES).run(tx, _code_rows(history))
    insert(_LEVELS).run(tx, _level_rows(batch.levels))
    rows = {
        key: _reservation_row(reservation, position)
        for key, (reservation, position) in batch.reservations.items()
    }
    insert(_NEW_RESERVATIONS).run(tx, [row for key, row in rows.items() if key in batch.placed])
    insert(_RESERVATIONS).run(tx, [row for key, row in rows.items() if key not in batch.placed])
    placed = [held for key, held in batch.reservations.items() if key in batch.placed]
    changed = [held for key, held in batch.reservations.items() if key not in batch.placed]
    insert(_NEW_RESERVATION_LINES).run(tx, _reservation_line_rows(placed))
    insert(_RESERVATION_LINES).run(tx, _reservation_line_rows(changed))
    insert(_KEYS).run(tx, _key_rows(batch))
    if batch.policies:
        insert(_POLICIES).run(tx, _policy_rows(batch.policies))


# -- the bulk load of `ledger rebuild` --------------------------------------------------------------------
# A replay writes the rows that only ever grow (history, codes, event keys) a batch at a time, and every
# level, reservation and policy once, as the replay left it: the same rows write_batch writes, into
# tables that have no indexes yet (so a plain COPY, no ON CONFLICT).


@dataclass(slots=True)
class LatestRows:
    """What the batches of a replay changed last, across batches: the values are the replay
    state's own objects, so they hold the final figures when written."""

    levels: dict[tuple[str, str], tuple[Level, int, str]] = field(default_factory=dict)
    reservations: dict[tuple[str, str], tuple[Reservation, int]] = field(default_factory=dict)
    policies: dict[tuple[str, str], tuple[Policy | None, int]] = field(default_factory=dict)

    def merge(self, batch: ProjectionBatch) -> None:
        self.levels.update(batch.levels)
        self.reservations.update(batch.reservations)
        self.policies.update(batch.policies)


# The tables `write_appended` writes: rows are only ever added to them.
APPENDED_TABLES = (_HISTORY.table, _CODES.table, _KEYS.table)


def write_appended(tx: SqlTx, batch: ProjectionBatch, into: Mapping[str, str]) -> list[str]:
    """Returns the tables (of `into`'s names) it added rows to."""
    history = _history_rows(batch)
    written: list[str] = []
    for insert, rows in ((_HISTORY, history), (_CODES, _code_rows(history)), (_KEYS, _key_rows(batch))):
        if rows:
            insert.into(into[insert.table], upsert=False).copy(tx, rows)
            written.append(into[insert.table])
    return written


def write_latest(
    tx: SqlTx,
    latest: LatestRows,
    into: Mapping[str, str],
    rows_per_statement: int,
    after_each: Callable[[], None] | None = None,
) -> None:
    """Every level, reservation and policy once, in statements of at most `rows_per_statement`
    (`after_each` is called after each: a long write still says it is alive)."""
    for bulk, rows in (
        (_LEVELS, _level_rows(latest.levels)),
        (
            _NEW_RESERVATIONS,
            [_reservation_row(held, position) for held, position in latest.reservations.values()],
        ),
        (_NEW_RESERVATION_LINES, _reservation_line_rows(latest.reservations.values())),
        (_POLICIES, _policy_rows(latest.policies)),
    ):
        plain = bulk.into(into[bulk.table], upsert=False)
        for start in range(0, len(rows), rows_per_statement):
            plain.copy(tx, rows[start : start + rows_per_statement])
            if after_each is not None:
                after_each()


def _level_rows(levels: Mapping[tuple[str, str], tuple[Level, int, str]]) -> list[tuple[object, ...]]:
    return [
        (
            store_id,
            sku,
            level.on_hand_units,
            level.reserved_units,
            level.incoming_units,
            position,
            updated_at,
            channels_text(level),
        )
        for (store_id, sku), (level, position, updated_at) in levels.items()
    ]


def _policy_rows(policies: Mapping[tuple[str, str], tuple[Policy | None, int]]) -> list[tuple[object, ...]]:
    return [
        (store_id, sku, policy_text(policy), position)
        for (store_id, sku), (policy, position) in policies.items()
    ]


def _history_rows(batch: ProjectionBatch) -> list[tuple[object, ...]]:
    """One row per line of every entry (the enums are StrEnums: a member is its value).

    The rows of one event share its position; `line_no` numbers them across the event's entries
    in log order (a transfer's incoming rows at the receiving store first, then the sending
    store's), so the key (position, line_no) stays unique and each store's rows keep the event's
    line order. The API shows line_no to no one but its cursor."""
    rows: list[tuple[object, ...]] = []
    append = rows.append
    previous_position = 0  # no event has position 0
    line_no = 0
    for recorded in batch.recorded:
        entry = recorded.entry
        event = entry.event
        position = recorded.position
        if recorded.line_no_from is not None:
            previous_position, line_no = position, recorded.line_no_from
        elif position != previous_position:  # the first entry of an event
            previous_position, line_no = position, 0
        store_id, event_id, source, type_ = event.store_id, event.event_id, event.source, event.type
        time, recorded_at = event.time.isoformat(), recorded.recorded_at
        occurred_at = utc_text(event.time)
        outcome, reason = entry.outcome, entry.reason
        order_id, reservation_id, reference = event.order_id, event.reservation_id, event.reference
        transfer_id, adjustment_reason, principal = event.transfer_id, event.reason, event.principal
        channel, policy = event.channel, policy_text(event.policy)
        codes = {line.sku: orjson.dumps(line.codes).decode() for line in event.lines if line.codes}
        if not entry.effects:  # a refused event without lines is in the audit trail all the same
            append(
                (position, line_no, store_id, None, event_id, source, type_, time, occurred_at, recorded_at,
                 outcome, reason, 0, 0, 0, None, None, None, False, False,
                 order_id, reservation_id, reference, transfer_id, adjustment_reason, principal,
                 channel, None, policy, None)
            )  # fmt: skip
            line_no += 1
        for effect, after in zip(entry.effects, recorded.levels_after, strict=True):
            if effect.sku == DEFAULT_SKU:  # a store's default policy: no level is named so
                on_hand = reserved_units = incoming = channels = None
            else:
                on_hand, reserved_units, incoming = (
                    after.on_hand_units,
                    after.reserved_units,
                    after.incoming_units,
                )
                channels = channels_text(after)
            append(
                (position, line_no, store_id, effect.sku, event_id, source, type_, time, occurred_at,
                 recorded_at, outcome, reason,
                 effect.on_hand_delta, effect.reserved_delta, effect.incoming_delta,
                 on_hand, reserved_units, incoming,
                 effect.oversold, effect.unknown_reservation,
                 order_id, reservation_id, reference, transfer_id, adjustment_reason, principal,
                 channel, channels, policy, codes.get(effect.sku) if codes else None)
            )  # fmt: skip
            line_no += 1
    return rows


def history_row_count(entry: Entry) -> int:
    """The history rows `_history_rows` makes of an entry: one per line, one for an entry without."""
    return len(entry.effects) or 1


_HISTORY_CODES_COLUMN = -1  # a history row's codes (JSON or None) are its last column
assert _HISTORY_COLUMNS[_HISTORY_CODES_COLUMN][0] == "codes"


def _code_rows(history: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """(store, code, position, line_no) for every code of every history row that has some."""
    rows: list[tuple[object, ...]] = []
    for row in history:
        codes = row[_HISTORY_CODES_COLUMN]
        if codes is not None:
            assert isinstance(codes, str)
            rows.extend((row[2], code, row[0], row[1]) for code in orjson.loads(codes))
    return rows


def _reservation_row(reservation: Reservation, position: int) -> tuple[object, ...]:
    lines = [
        [sku, line.qty_units, line.shipped_units, line.released_units]
        for sku, line in reservation.lines.items()
    ]
    status, remaining = reservation.status_and_remaining()
    return (
        reservation.store_id,
        reservation.reservation_id,
        reservation.order_id,
        utc_text(reservation.expires_at) if reservation.expires_at else None,
        orjson.dumps(lines).decode(),
        reservation.closed_as,  # the enums here are StrEnums: their members are their values
        status,
        remaining,
        reservation.placed_at_position,
        position,
        reservation.channel,
    )


def _reservation_line_rows(
    reservations: Iterable[tuple[Reservation, int]],
) -> list[tuple[object, ...]]:
    """(store, reservation, SKU, what the line still holds, placed at, position) for every line."""
    return [
        (
            reservation.store_id,
            reservation.reservation_id,
            sku,
            line.qty_units - line.shipped_units - line.released_units,
            reservation.placed_at_position,
            position,
        )
        for reservation, position in reservations
        for sku, line in reservation.lines.items()
    ]


def _key_rows(batch: ProjectionBatch) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    recorded_entries = batch.recorded
    last = len(recorded_entries) - 1
    for index, recorded in enumerate(recorded_entries):
        entry = recorded.entry
        if recorded.key_elsewhere or (
            index < last and recorded_entries[index + 1].position == recorded.position
        ):
            continue  # an event's entries share its key: recorded once, with its last entry
        shortfall = (
            orjson.dumps([[s.sku, s.requested_units, s.available_units] for s in entry.shortfall]).decode()
            if entry.shortfall
            else None
        )
        rows.append(
            (
                entry.event.source,
                entry.event.event_id,
                recorded.position,
                entry.outcome,
                entry.reason,
                shortfall,
            )
        )
    return rows
