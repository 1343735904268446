"""Time as the ledger stores it: fixed-width UTC text, so that text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no offset; the ledger only stores aware times")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> datetime:
    return datetime.now(UTC)
