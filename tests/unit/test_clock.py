"""The ledger's stored time text: UTC with microseconds and a Z, the same text whatever the offset
it came with, fixed-width in every year, so that text order is time order (every filter on a time
compares the texts)."""

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
def test_the_text_is_strftimes_utc_text_with_a_four_digit_year(moment: datetime) -> None:
    utc = moment.astimezone(UTC)
    assert utc_text(moment) == f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")


@given(MOMENTS, MOMENTS)
def test_text_order_is_time_order_in_every_year(one: datetime, other: datetime) -> None:
    """A year below 1000 written "999-..." sorted after "2026-...": an entry dated then counted
    after every later one, and a reservation expiring then never expired."""
    assert (utc_text(one) < utc_text(other)) == (one < other)
    assert len(utc_text(one)) == len("2026-11-22T07:15:00.000000Z")


def test_microseconds_are_always_written() -> None:
    moment = datetime(2026, 11, 22, 10, 15, tzinfo=timezone(timedelta(hours=3)))
    assert utc_text(moment) == "2026-11-22T07:15:00.000000Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_text(datetime(2026, 11, 22, 10, 15))
