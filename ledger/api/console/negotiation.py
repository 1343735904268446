"""Who the console answers: a person's browser, which gets a refusal as a page it can read (the
login form, a 403 page), or a program, which gets it as CONTRACT §5's problem+json.

A browser's navigation asks for `text/html` in its Accept header; curl, HTTP libraries and the
contract's suites send `*/*` or no Accept at all. So a refusal is a page only where the request
names text/html and does not refuse it (`q=0`). A page the console serves (200) is a page whoever
asks: the console is for people.
"""

from __future__ import annotations

from collections.abc import Iterable

PAGE_MEDIA_TYPE = b"text/html"
ACCEPT_ITEMS_MAX = 64  # media ranges of one Accept header looked at (a browser sends about ten)


def wants_page(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the request's Accept names text/html with a quality above 0 (RFC 9110 §12.5.1)."""
    for key, value in headers:
        if key == b"accept":
            for item in value.split(b",", ACCEPT_ITEMS_MAX)[:ACCEPT_ITEMS_MAX]:
                media, *parameters = item.split(b";")
                if media.strip().lower() == PAGE_MEDIA_TYPE and _quality(parameters) > 0:
                    return True
    return False


def _quality(parameters: list[bytes]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0
