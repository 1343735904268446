"""Who gets the console's refusals as pages: a request whose Accept names text/html."""

from __future__ import annotations

import pytest

from ledger.api.console.negotiation import ACCEPT_ITEMS_MAX, wants_page

CHROMIUM = b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        (CHROMIUM, True),
        (b"TEXT/HTML", True),
        (b"application/json, text/html ; q=0.5", True),
        (None, False),
        (b"*/*", False),
        (b"application/problem+json", False),
        (b"text/*", False),
        (b"text/html;q=0", False),
        (b"text/html; Q=0.000", False),
        (b"text/html;q=nonsense", False),
        (b"text/htmlx", False),
        (b"application/json;profile=text/html", False),
    ],
)
def test_a_page_only_where_text_html_is_asked_for(accept: bytes | None, page: bool) -> None:
    headers = [(b"host", b"localhost")] + ([(b"accept", accept)] if accept is not None else [])
    assert wants_page(headers) is page


def test_a_long_accept_header_is_read_only_so_far() -> None:
    items = [b"application/x-%d" % n for n in range(ACCEPT_ITEMS_MAX)]
    assert wants_page([(b"accept", b", ".join([*items[:-1], b"text/html"]))])
    assert not wants_page([(b"accept", b", ".join([*items, b"text/html"]))])
