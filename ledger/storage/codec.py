"""How a recorded entry is stored in the event log: the stored event's topic and JSON state.

The topic is the event type (`stock.receipt`, ...): a stored name that never changes. The state
holds the producer's event and the ledger's decision, so the log alone rebuilds every projection.

An event's position is the notification id of its last entry (a transfer records two entries, the
receiving store's first). Format 2 says so in each entry: `event_entries_after`, how many entries of
the same event follow this one (written only when some do). Format 1 did not; its writers recorded
a transfer's incoming entry immediately before the transfer's own, in the same transaction, and no
other event had more than one entry, which is what `decode` infers for it.

Format 3 adds `principal` (CONTRACT §5: who sent the event), written only when there is one;
formats 1 and 2 had none, and read as null.

Format 4 adds `channel` (CONTRACT §6) and, on a `stock.policy_changed` entry, `policy` (its public
JSON form; absent when the policy was cleared); earlier formats had neither.

Any format may hold `codes` (CONTRACT §10): the marking codes of the event's lines, by SKU (no SKU
is twice in one event), written only when a line has some. An entry without the key has none, so
the format number stays: every entry written before reads the same, and a reader that knows no
codes reads the rest of an entry that has them unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import StoredEvent

from ledger.domain.across_stores import PARTS_MAX
from ledger.domain.frozen_values import frozen_value
from ledger.domain.model import (
    EVENT_TYPE_BY_VALUE,
    OUTCOME_BY_VALUE,
    REASON_BY_VALUE,
    Entry,
    EventType,
    Line,
    LineEffect,
    Outcome,
    Policy,
    RejectionReason,
    Shortfall,
    StockEvent,
)

STATE_FORMAT_VERSION = 4
READABLE_FORMATS = (1, 2, 3, STATE_FORMAT_VERSION)
# A transfer's two; a reservation across stores' parts (PARTS_MAX). A larger count in a stored
# entry is a corrupt log.
EVENT_ENTRIES_MAX = max(2, PARTS_MAX)


@frozen_value
class DecodedEntry:
    entry: Entry
    recorded_at: str  # UTC, ISO 8601
    event_entries_after: int  # how many entries of the same event follow this one in the log


def encode(entry: Entry, store_version: int, recorded_at: str, event_entries_after: int = 0) -> StoredEvent:
    """`event_entries_after`: how many entries of the same event the writer records right after
    this one (1 for a transfer's incoming entry, else 0)."""
    assert 0 <= event_entries_after < EVENT_ENTRIES_MAX, event_entries_after
    event = entry.event
    state: dict[str, Any] = {
        "v": STATE_FORMAT_VERSION,
        "id": event.event_id,
        "source": event.source,
        "time": event.time.isoformat(),
        "recorded_at": recorded_at,
        "outcome": entry.outcome,  # a StrEnum: the member is its value
        "lines": [
            [
                e.sku,
                e.qty_units,
                e.on_hand_delta,
                e.reserved_delta,
                e.incoming_delta,
                e.oversold,
                e.unknown_reservation,
            ]
            for e in entry.effects
        ],
    }
    # Optional keys only when set (one test each: most events set one or two of them).
    if event.order_id is not None:
        state["order_id"] = event.order_id
    if event.reservation_id is not None:
        state["reservation_id"] = event.reservation_id
    if event.reference is not None:
        state["reference"] = event.reference
    if event.transfer_id is not None:
        state["transfer_id"] = event.transfer_id
    if event.to_store is not None:
        state["to_store"] = event.to_store
    if event.reason is not None:
        state["reason"] = event.reason
    if event.expires_at is not None:
        state["expires_at"] = event.expires_at.isoformat()
    if entry.reason is not None:
        state["rejection"] = entry.reason
    if not event.lines:  # a release sent without lines: its effects name the reservation's lines
        state["no_lines"] = True
    if entry.shortfall:
        state["shortfall"] = [[s.sku, s.requested_units, s.available_units] for s in entry.shortfall]
    if event_entries_after:
        state["event_entries_after"] = event_entries_after
    if event.principal is not None:
        state["principal"] = event.principal
    if event.channel is not None:
        state["channel"] = event.channel
    if event.policy is not None:
        state["policy"] = event.policy.as_json()
    codes = {line.sku: list(line.codes) for line in event.lines if line.codes}
    if codes:
        state["codes"] = codes
    return StoredEvent(
        originator_id=event.store_id,
        originator_version=store_version,
        topic=event.type.value,
        state=orjson.dumps(state),
    )


_ENTRIES_AFTER_KEY = b'"event_entries_after"'


def may_have_entries_after(topic: str, state_bytes: bytes) -> bool:
    """True for every stored entry that has entries of its event after it, without decoding it (a
    few others may pass too: `decode` tells). Format 1 inferred them from the type; later formats
    write the key only when some follow."""
    return _ENTRIES_AFTER_KEY in state_bytes or topic == EventType.TRANSFER_INCOMING.value


def decode(store_id: str, topic: str, state_bytes: bytes) -> DecodedEntry:
    """Reads every format (see the module's docstring)."""
    state = orjson.loads(state_bytes)
    assert state["v"] in READABLE_FORMATS, f"{store_id} {topic}: stored format {state['v']}"
    expires_at = state.get("expires_at")
    policy = state.get("policy")
    codes = state.get("codes") or {}
    event = StockEvent(
        event_id=state["id"],
        source=state["source"],
        type=EVENT_TYPE_BY_VALUE.get(topic) or EventType(topic),
        time=datetime.fromisoformat(state["time"]),
        store_id=store_id,
        lines=()
        if state.get("no_lines")
        else tuple(Line(line[0], line[1], tuple(codes.get(line[0], ()))) for line in state["lines"]),
        order_id=state.get("order_id"),
        reservation_id=state.get("reservation_id"),
        reference=state.get("reference"),
        transfer_id=state.get("transfer_id"),
        to_store=state.get("to_store"),
        reason=state.get("reason"),
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
        principal=state.get("principal"),
        channel=state.get("channel"),
        policy=Policy.from_json(policy) if policy is not None else None,
    )
    rejection = state.get("rejection")
    entry = Entry(
        event=event,
        outcome=OUTCOME_BY_VALUE.get(state["outcome"]) or Outcome(state["outcome"]),
        effects=tuple(LineEffect(*line) for line in state["lines"]),
        reason=(REASON_BY_VALUE.get(rejection) or RejectionReason(rejection)) if rejection else None,
        shortfall=tuple(Shortfall(*s) for s in state.get("shortfall") or ()),
    )
    if state["v"] == 1:
        entries_after = 1 if event.type is EventType.TRANSFER_INCOMING else 0
    else:
        entries_after = int(state.get("event_entries_after", 0))
    assert 0 <= entries_after < EVENT_ENTRIES_MAX, f"{store_id} {topic}: {entries_after} entries after"
    return DecodedEntry(entry, state["recorded_at"], entries_after)
