"""GET /v1/stores/{store}/history: the audit trail, oldest first, one entry per line of an event."""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from ledger.api.deps import LedgerDep, ReadableStore, SettingsDep
from ledger.api.problems import invalid
from ledger.api.query_numbers import DECIMAL_DIGITS, is_decimal_digits
from ledger.api.schemas import POSITION_MAX, HistoryPagePublic, problem_responses
from ledger.api.times import utc_parameter
from ledger.domain.ids import ID_PATTERN
from ledger.domain.model import CODE_CHARS_MAX, DEFAULT_SKU, EventType
from ledger.intake.envelope import CODE_PATTERN, TEXT_CHARS_MAX, FieldError
from ledger.projections.queries import HistoryFilter

router = APIRouter(tags=["history"])

_FLAGS = ("oversold", "unknown_reservation")
# A plain position as a cursor means "after every line of that event"; lines are far fewer.
LINE_NO_MAX = 10**9
_OPTIONAL = ("order_id", "reservation_id", "reference", "transfer_id", "adjustment_reason")


def encode_cursor(position: int, line_no: int) -> str:
    return base64.urlsafe_b64encode(f"{position}.{line_no}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """An opaque cursor from `next`, or a plain position (every entry after it). Both numbers are
    bounded here: the database holds 64-bit integers, and a larger one is the caller's error."""
    refused = invalid([FieldError("after", "is not a cursor from `next` nor a position")])
    try:  # int() refuses over 4,300 digits with ValueError too
        if is_decimal_digits(cursor):
            position, line_no = int(cursor), LINE_NO_MAX
        else:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            position_text, line_no_text = text.split(".")
            if not (is_decimal_digits(position_text) and is_decimal_digits(line_no_text)):
                raise refused  # int() would take '+5', ' 5', '1_0' and other scripts' digits
            position, line_no = int(position_text), int(line_no_text)
    except (ValueError, UnicodeDecodeError):
        raise refused from None
    if not (0 <= position <= POSITION_MAX and 0 <= line_no <= LINE_NO_MAX):
        raise refused
    return position, line_no


def entry_public(row: dict[str, Any]) -> dict[str, Any]:
    entry = {
        key: row[key]
        for key in (
            "position",
            "event_id",
            "source",
            "type",
            "time",
            "recorded_at",
            "sku",
            "outcome",
            "reason",
            "on_hand_delta",
            "reserved_delta",
            "incoming_delta",
            "on_hand",
            "reserved",
        )
    }
    entry["available"] = None if row["on_hand"] is None else row["on_hand"] - row["reserved"]
    entry["incoming"] = row["incoming"]
    entry["principal"] = row["principal"]
    for flag in _FLAGS:
        entry[flag] = bool(row[flag])
    for key in _OPTIONAL:
        if row[key] is not None:
            entry[key] = row[key]
    if row["channel"] is not None:
        entry["channel"] = row["channel"]
    if row["codes"] is not None:  # CONTRACT §10: the marking codes the line moved
        entry["codes"] = orjson.loads(row["codes"])
    if row["policy"] is not None:  # a stock.policy_changed entry: the policy it set
        entry["policy"] = orjson.loads(row["policy"])
    elif row["type"] == "stock.policy_changed":
        entry["policy"] = None  # cleared
    return entry


def _check_filters(sku: str | None, order_id: str | None, reservation_id: str | None) -> None:
    """A filter no entry can match is the caller's slip (`sku=a/b`, `order_id=`): said, not
    answered with an empty page. `sku=*` finds the changes of the store's default policy (their
    entries' SKU). PostgreSQL's text cannot hold NUL: its query failed (500) where SQLite's
    matched nothing."""
    errors = [
        FieldError(name, "must be 1 to 64 ASCII letters, digits or -_.: characters")
        for name, value in (("sku", sku), ("reservation_id", reservation_id))
        if value is not None
        and not ID_PATTERN.fullmatch(value)
        and not (name == "sku" and value == DEFAULT_SKU)
    ]
    if order_id is not None and not 1 <= len(order_id) <= TEXT_CHARS_MAX:
        errors.append(FieldError("order_id", f"must be 1 to {TEXT_CHARS_MAX} characters"))
    elif order_id is not None and "\x00" in order_id:
        errors.append(FieldError("order_id", "must not contain the NUL character (U+0000)"))
    if errors:
        raise invalid(errors)


@router.get(
    "/v1/stores/{store}/history", response_model=HistoryPagePublic, responses=problem_responses(422, 503)
)
async def get_history(
    store: ReadableStore,
    ledger: LedgerDep,
    settings: SettingsDep,
    sku: Annotated[str | None, Query(description="the entries of one SKU (an id: CONTRACT §1)")] = None,
    type: Annotated[EventType | None, Query(description="the entries of one event type")] = None,
    order_id: Annotated[
        str | None, Query(description=f"the entries of one order (1 to {TEXT_CHARS_MAX} characters)")
    ] = None,
    reservation_id: Annotated[
        str | None, Query(description="the entries of one reservation (an id: CONTRACT §1)")
    ] = None,
    from_: Annotated[str | None, Query(alias="from", description="recorded at or after (RFC 3339)")] = None,
    to: Annotated[str | None, Query(description="recorded at or before (RFC 3339)")] = None,
    occurred_from: Annotated[
        str | None, Query(description="the event's `time` at or after (RFC 3339; business time)")
    ] = None,
    occurred_to: Annotated[
        str | None, Query(description="the event's `time` at or before (RFC 3339; business time)")
    ] = None,
    code: Annotated[
        str | None, Query(description="the entries that carry this marking code or SSCC (CONTRACT §10)")
    ] = None,
    oversold: Annotated[
        bool | None,
        Query(
            description="true: the entries recorded past what their store held (a shipment or sale "
            "beyond the available units); false: the others"
        ),
    ] = None,
    after: Annotated[str | None, Query(description="the `next` cursor of the previous page")] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="at most LEDGER_HISTORY_PAGE_MAX"), DECIMAL_DIGITS
    ] = None,
) -> Response:
    page_size = limit or settings.history_page_default
    if page_size > settings.history_page_max:
        raise invalid([FieldError("limit", f"must be at most {settings.history_page_max}")])
    if code is not None and not CODE_PATTERN.fullmatch(code):
        raise invalid([FieldError("code", f"must be 1 to {CODE_CHARS_MAX} printable ASCII characters")])
    _check_filters(sku, order_id, reservation_id)
    after_position, after_line_no = decode_cursor(after) if after else (0, -1)
    where = HistoryFilter(
        store_id=store,
        sku=sku,
        type=None if type is None else type.value,
        order_id=order_id,
        reservation_id=reservation_id,
        recorded_from=utc_parameter("from", from_),
        recorded_to=utc_parameter("to", to),
        occurred_from=utc_parameter("occurred_from", occurred_from),
        occurred_to=utc_parameter("occurred_to", occurred_to),
        code=code,
        oversold=oversold,
        after_position=after_position,
        after_line_no=after_line_no,
    )
    rows = await asyncio.to_thread(ledger.history, where, page_size)
    more = len(rows) > page_size
    rows = rows[:page_size]
    next_cursor = encode_cursor(rows[-1]["position"], rows[-1]["line_no"]) if more else None
    body = {"entries": [entry_public(row) for row in rows], "next": next_cursor}
    return Response(orjson.dumps(body), media_type="application/json")
