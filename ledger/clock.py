"""Time as the ledger stores it: fixed-width UTC text, so that text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no offset; the ledger only stores aware times")
    # isoformat writes the year in four digits, as every other field in fixed width, whatever the
    # year (strftime's %Y does not pad a year below 1000, and "999-..." sorted after "2026-...");
    # it also costs about half of strftime, and every history row and level has one. Its first 26
    # characters drop the "+00:00".
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


def utc_now() -> datetime:
    return datetime.now(UTC)
