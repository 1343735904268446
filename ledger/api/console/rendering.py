"""The console's pages: Jinja2 templates shipped in the package, every value escaped."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

# The console's pages change with each answer and may hold what a token may read: never kept.
# Nor shown inside another site's frame (a login form or a page under a deceiving overlay).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


def when(text: str | None) -> str:
    """A stored or sent time as people read it: to the minute, in UTC (the page says so)."""
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    # isoformat, not strftime: %Y does not pad a year below 1000 ("999-05-31 21:00").
    return moment.astimezone(UTC).isoformat(sep=" ", timespec="minutes")[:16]


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("ledger.api.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    return env


def page(
    name: str, status_code: int = 200, headers: dict[str, str] | None = None, **values: Any
) -> HTMLResponse:
    html = environment().get_template(name).render(**values)
    return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})
