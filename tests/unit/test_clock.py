"""The ledger's stored time text: UTC with microseconds and a Z, the same text whatever the offset
it came with (fixed-width from year 1000 on: strftime does not pad a year below it)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.clock import utc_text

OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Times whose UTC instant is still a datetime (an offset may move one past year 1 or 9999).
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS)


@given(MOMENTS)
def test_the_text_is_strftimes_utc_text(moment: datetime) -> None:
    assert utc_text(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_microseconds_are_always_written() -> None:
    moment = datetime(2026, 11, 22, 10, 15, tzinfo=timezone(timedelta(hours=3)))
    assert utc_text(moment) == "2026-11-22T07:15:00.000000Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_text(datetime(2026, 11, 22, 10, 15))
