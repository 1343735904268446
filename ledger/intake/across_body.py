"""The bodies of a reservation across stores and of sourcing (CONTRACT §6), read into the
commands the writer decides (ledger/domain/across_stores.py), or InvalidEvent naming every wrong
field as the caller wrote it (`lines[2].qty`, `stores[0]`, `reserve.reservation_id`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.domain.across_stores import ReserveAcrossStores, SourceAndReserve
from ledger.domain.ids import ID_PATTERN
from ledger.domain.model import EventType, Line, StockEvent
from ledger.domain.sourcing import MAX_STORES_LIMIT
from ledger.intake.body_fields import (
    ACROSS_LINE_FIELDS,
    RESERVATION_FIELDS,
    SOURCING_FIELDS,
    SOURCING_LINE_FIELDS,
    SOURCING_RESERVE_FIELDS,
    unknown_fields,
)
from ledger.intake.envelope import FieldError, IntakeLimits, InvalidEvent, read_data, read_envelope

DEFAULT_MAX_STORES = 3  # CONTRACT §6


@dataclass(frozen=True, slots=True)
class AcrossLimits:
    intake: IntakeLimits
    stores_max: int  # LEDGER_RESERVATION_STORES_MAX
    sourcing_lines_max: int
    candidates_max: int
    search_steps_max: int


@dataclass(frozen=True, slots=True)
class SourcingAsk:
    """A sourcing request: the order's lines, the candidates (None: every store, by id), the
    channel, max_stores, and what to reserve (None: only ask)."""

    lines: tuple[Line, ...]
    candidates: tuple[str, ...] | None
    channel: str | None
    max_stores: int
    reserve: dict[str, Any] | None
    # reserve's fields, read as a reservation's
    reservation_id: str | None
    order_id: str | None
    expires_at: datetime | None


def _store_envelope(store: str, data: dict[str, Any], source: str, now: datetime) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": os.urandom(16).hex(),
        "source": source,
        "type": EventType.RESERVATION.value,
        "time": now.isoformat(),
        "subject": store,
        "data": data,
    }


def _renamed(error: FieldError, line_numbers: list[int], prefix: str) -> FieldError:
    """A field of a store's part, named as the caller wrote it in the whole body."""
    name = error.field.removeprefix("data.")
    match = re.match(r"^lines\[(\d+)\](.*)$", name)
    if match:
        name = f"lines[{line_numbers[int(match.group(1))]}]{match.group(2)}"
    return FieldError(prefix + name, error.message)


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidEvent([FieldError("", "the body must be a JSON object")])
    return body


def read_reservation_across(
    body: object, limits: AcrossLimits, source: str, now: datetime, principal: str | None
) -> ReserveAcrossStores:
    body = _object(body)
    errors: list[FieldError] = unknown_fields(body, RESERVATION_FIELDS, "reservation", ACROSS_LINE_FIELDS)
    if body.get("reservation_id") is None:
        errors.append(FieldError("reservation_id", "is required"))
    lines = body.get("lines")
    if not isinstance(lines, list) or not 1 <= len(lines) <= limits.intake.lines_per_event_max:
        errors.append(
            FieldError("lines", f"must be a list of 1 to {limits.intake.lines_per_event_max} lines")
        )
        raise InvalidEvent(errors)
    by_store: dict[str, list[int]] = {}
    for number, line in enumerate(lines):
        store = line.get("store") if isinstance(line, dict) else None
        if not isinstance(store, str) or not ID_PATTERN.fullmatch(store):
            errors.append(
                FieldError(f"lines[{number}].store", "must be a store id (1 to 64 of A-Z a-z 0-9 - _ . :)")
            )
            continue
        by_store.setdefault(store, []).append(number)
    if len(by_store) > limits.stores_max:
        errors.append(FieldError("lines", f"span {len(by_store)} stores, more than {limits.stores_max}"))
    if errors:
        raise InvalidEvent(errors)
    shared: dict[str, Any] = {
        k: body[k] for k in ("reservation_id", "order_id", "expires_at", "channel") if k in body
    }
    parts: list[StockEvent] = []
    for store, numbers in by_store.items():
        part_lines = [{k: v for k, v in lines[n].items() if k != "store"} for n in numbers]
        data: dict[str, Any] = {**shared, "lines": part_lines}
        try:
            parts.append(
                read_envelope(
                    _store_envelope(store, data, source, now), limits.intake, principal, made_by_ledger=True
                )
            )
        except InvalidEvent as error:
            errors.extend(_renamed(e, numbers, "") for e in error.errors)
    if errors:
        raise InvalidEvent(list(dict.fromkeys(errors)))
    first = parts[0]
    # The parts share the command's identity: one event, one position, one key.
    parts = [_with_identity(part, first) for part in parts]
    return ReserveAcrossStores(
        event_id=first.event_id,
        source=source,
        type=EventType.RESERVATION,
        time=first.time,
        store_id=first.store_id,
        lines=(),
        order_id=first.order_id,
        reservation_id=first.reservation_id,
        expires_at=first.expires_at,
        principal=principal,
        channel=first.channel,
        parts=tuple(parts),
    )


def _with_identity(part: StockEvent, first: StockEvent) -> StockEvent:
    return StockEvent(
        event_id=first.event_id,
        source=first.source,
        type=part.type,
        time=first.time,
        store_id=part.store_id,
        lines=part.lines,
        order_id=part.order_id,
        reservation_id=part.reservation_id,
        expires_at=part.expires_at,
        principal=part.principal,
        channel=part.channel,
    )


# Store ids joined by commas, which no store id holds: one match checks them all (a match per id
# was a tenth of a sourcing request's reading).
_STORE_IDS = re.compile(rf"{ID_PATTERN.pattern}(?:,{ID_PATTERN.pattern})*")


def store_ids_once(stores: list[Any]) -> bool:
    """Every one a store id, none named twice."""
    try:
        joined = ",".join(stores)
    except TypeError:  # not every one a string
        return False
    # As many commas as joins: none came from inside an item, so each part matched is one item.
    return (
        joined.count(",") == len(stores) - 1
        and _STORE_IDS.fullmatch(joined) is not None
        and len(set(stores)) == len(stores)
    )


def _reserve(reserve: object, errors: list[FieldError]) -> dict[str, Any] | None:
    """Sourcing's `reserve` object, its faults added to `errors`; None when it is left out or not
    an object."""
    if reserve is None:
        return None
    if not isinstance(reserve, dict):
        errors.append(FieldError("reserve", "must be an object with reservation_id"))
        return None
    if reserve.get("reservation_id") is None:
        errors.append(FieldError("reserve.reservation_id", "is required"))
    errors += unknown_fields(reserve, SOURCING_RESERVE_FIELDS, "sourcing's reserve", prefix="reserve.")
    return reserve


def read_sourcing(body: object, limits: AcrossLimits, source: str, now: datetime) -> SourcingAsk:
    body = _object(body)
    errors: list[FieldError] = unknown_fields(body, SOURCING_FIELDS, "sourcing request", SOURCING_LINE_FIELDS)
    lines = body.get("lines")
    if not isinstance(lines, list) or not 1 <= len(lines) <= limits.sourcing_lines_max:
        errors.append(FieldError("lines", f"must be a list of 1 to {limits.sourcing_lines_max} lines"))
        lines = None
    stores = body.get("stores")
    candidates: tuple[str, ...] | None = None
    if stores is not None:
        if not isinstance(stores, list) or not 1 <= len(stores) <= limits.candidates_max:
            errors.append(FieldError("stores", f"must be a list of 1 to {limits.candidates_max} store ids"))
        elif not store_ids_once(stores):  # checked whole first; then one by one, to name what is wrong
            named: set[str] = set()
            for number, store in enumerate(stores):
                if not isinstance(store, str) or not ID_PATTERN.fullmatch(store):
                    errors.append(FieldError(f"stores[{number}]", "must be a store id"))
                elif store in named:
                    errors.append(FieldError(f"stores[{number}]", f"{store} is named twice"))
                else:
                    named.add(store)
        else:
            candidates = tuple(stores)
    max_stores = body.get("max_stores", DEFAULT_MAX_STORES)
    if (
        isinstance(max_stores, bool)
        or not isinstance(max_stores, int)
        or not 1 <= max_stores <= MAX_STORES_LIMIT
    ):
        errors.append(FieldError("max_stores", f"must be an integer from 1 to {MAX_STORES_LIMIT}"))
    reserve = _reserve(body.get("reserve"), errors)
    # The lines, the channel and the reservation's fields are checked as a reservation's.
    data: dict[str, Any] = {"reservation_id": "sourcing", **(reserve or {})}
    if "channel" in body:
        data["channel"] = body["channel"]
    if lines is not None:
        data["lines"] = lines
    checked: tuple[tuple[Line, ...], dict[str, Any]] | None
    try:
        checked = read_data(data, EventType.RESERVATION, limits.intake, "sourcing")
    except InvalidEvent as error:
        for e in error.errors:
            name = e.field.removeprefix("data.")
            if name == "lines" and lines is None:
                continue  # already said
            if name in ("reservation_id", "order_id", "expires_at"):
                name = f"reserve.{name}"
            errors.append(FieldError(name, e.message))
        checked = None
    if errors or checked is None:
        raise InvalidEvent(list(dict.fromkeys(errors)))
    lines_read, fields = checked
    return SourcingAsk(
        lines_read,
        candidates,
        fields["channel"],
        max_stores,
        reserve,
        fields["reservation_id"],
        fields["order_id"],
        fields["expires_at"],
    )


def sourcing_command(
    ask: SourcingAsk,
    candidates: tuple[str, ...],
    limits: AcrossLimits,
    source: str,
    now: datetime,
    principal: str | None,
) -> SourceAndReserve:
    """The command that chooses and reserves in one decision of the writer."""
    assert ask.reserve is not None
    # Its key is the reservation id under a source of its own: the same request again is a
    # duplicate by the log's own key, whichever stores a second search would choose.
    return SourceAndReserve(
        event_id=ask.reservation_id or "",
        source=source,
        type=EventType.RESERVATION,
        time=now,
        store_id=candidates[0],
        lines=ask.lines,
        order_id=ask.order_id,
        reservation_id=ask.reservation_id,
        expires_at=ask.expires_at,
        principal=principal,
        channel=ask.channel,
        candidates=candidates,
        max_stores=ask.max_stores,
        search_steps_max=limits.search_steps_max,
    )
