"""The timeline form's window as people type it, for the API: blank is no bound, a date alone is
that whole day in UTC (From its first microsecond, To its last), anything else goes on as typed,
trimmed, for the API to take or to name what is wrong with it."""

from __future__ import annotations

import re

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def window_bound(typed: str | None, *, end: bool) -> str | None:
    if typed is None or not typed.strip():
        return None
    text = typed.strip()
    if _DATE.fullmatch(text):
        return f"{text}T23:59:59.999999Z" if end else f"{text}T00:00:00Z"
    return text


def refusal_text(body: object) -> str:
    """A 422 problem's faults as one line for the form: `from: must be ...; to: ...`."""
    if not isinstance(body, dict):
        return "the window was refused"
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(
            f"{e.get('field', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict)
        )
    return str(body.get("detail") or "the window was refused")
