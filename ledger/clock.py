"""Time as the ledger stores it: fixed-width UTC text, so that text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no offset; the ledger only stores aware times")
    utc = moment.astimezone(UTC)
    if utc.year < 1000:  # strftime's %Y does not pad a year below 1000: such texts keep its form
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as strftime above, for about half its cost: every history row and every
    # level of a batch or a rebuild has one (its first 26 characters drop the "+00:00").
    return utc.isoformat(timespec="microseconds")[:26] + "Z"


def utc_now() -> datetime:
    return datetime.now(UTC)
