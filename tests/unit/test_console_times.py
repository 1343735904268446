"""How the console writes a time for people: to the minute, in UTC, the year in four digits."""

from __future__ import annotations

import pytest

from ledger.api.console.rendering import when


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("2026-12-07T10:15:42.123456+03:00", "2026-12-07 07:15"),
        ("2026-12-07T07:15:00.000000Z", "2026-12-07 07:15"),
        # strftime's %Y wrote "999-05-31 21:00": the ledger takes any year from 1 (CONTRACT §1)
        ("0999-06-01T00:00:00+03:00", "0999-05-31 21:00"),
        ("0001-01-01T05:00:00+03:00", "0001-01-01 02:00"),
    ],
)
def test_a_time_is_shown_to_the_minute_in_utc(text: str, shown: str) -> None:
    assert when(text) == shown


@pytest.mark.parametrize("text", [None, "", "not a time", "2026-12-07T10:15:00"])
def test_what_is_no_time_with_an_offset_is_shown_as_it_came(text: str | None) -> None:
    assert when(text) == (text or "")
