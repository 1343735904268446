"""How long a 429 of MoySklad stops a client: its header's milliseconds, within a bound."""

from __future__ import annotations

import pytest

from adapters.moysklad import pause_after_429_s
from adapters.outbound import RETRY_AFTER_S_MAX

WINDOW_S = 3.0


@pytest.mark.parametrize(
    ("header", "pause_s"),
    [
        ("2500", 2.5),
        ("0", 0.0),
        (None, WINDOW_S),
        ("", WINDOW_S),
        ("86400000", RETRY_AFTER_S_MAX),  # a day, as a broken or hostile answer may say
        ("inf", WINDOW_S),
        ("nan", WINDOW_S),
        ("-5000", WINDOW_S),
        ("soon", WINDOW_S),
    ],
)
def test_a_429s_pause_is_the_headers_within_a_bound(header: str | None, pause_s: float) -> None:
    assert pause_after_429_s(header, WINDOW_S) == pause_s
