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
from ledger.api.schemas import HistoryPagePublic, problem_responses
from ledger.clock import utc_text
from ledger.intake.envelope import FieldError, parse_rfc3339
from ledger.projections.queries import HistoryFilter

router = APIRouter(tags=["history"])

_FLAGS = ("oversold", "unknown_reservation")
_OPTIONAL = ("order_id", "reservation_id", "reference", "transfer_id", "adjustment_reason")


def encode_cursor(position: int, line_no: int) -> str:
    return base64.urlsafe_b64encode(f"{position}.{line_no}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """An opaque cursor from `next`, or a plain position (every entry after it)."""
    if cursor.isdigit():
        return int(cursor), 10**9
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        position, line_no = text.split(".")
        return int(position), int(line_no)
    except (ValueError, UnicodeDecodeError):
        raise invalid([FieldError("after", "is not a cursor from `next` nor a position")]) from None


def _time_filter(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    moment = parse_rfc3339(value)
    if moment is None:
        raise invalid([FieldError(name, "must be an RFC 3339 time with an offset")])
    return utc_text(moment)


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
    return entry


@router.get(
    "/v1/stores/{store}/history", response_model=HistoryPagePublic, responses=problem_responses(422, 503)
)
async def get_history(
    store: ReadableStore,
    ledger: LedgerDep,
    settings: SettingsDep,
    sku: str | None = None,
    type: Annotated[str | None, Query(description="e.g. stock.pos_sale")] = None,
    order_id: str | None = None,
    reservation_id: str | None = None,
    from_: Annotated[str | None, Query(alias="from", description="recorded at or after (RFC 3339)")] = None,
    to: Annotated[str | None, Query(description="recorded at or before (RFC 3339)")] = None,
    after: Annotated[str | None, Query(description="the `next` cursor of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    page_size = limit or settings.history_page_default
    if page_size > settings.history_page_max:
        raise invalid([FieldError("limit", f"must be at most {settings.history_page_max}")])
    after_position, after_line_no = decode_cursor(after) if after else (0, -1)
    where = HistoryFilter(
        store_id=store,
        sku=sku,
        type=type,
        order_id=order_id,
        reservation_id=reservation_id,
        recorded_from=_time_filter("from", from_),
        recorded_to=_time_filter("to", to),
        after_position=after_position,
        after_line_no=after_line_no,
    )
    rows = await asyncio.to_thread(ledger.history, where, page_size)
    more = len(rows) > page_size
    rows = rows[:page_size]
    next_cursor = encode_cursor(rows[-1]["position"], rows[-1]["line_no"]) if more else None
    body = {"entries": [entry_public(row) for row in rows], "next": next_cursor}
    return Response(orjson.dumps(body), media_type="application/json")
