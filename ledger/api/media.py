"""The content types a write route accepts (CONTRACT §3): JSON only, so that no web page can write
across sites with a "simple" request (`text/plain`, a form, or no body at all needs no preflight)."""

from __future__ import annotations

from collections.abc import Iterable

from ledger.api.problems import Problem

JSON = "application/json"
CLOUDEVENT = "application/cloudevents+json"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"
EVENT_TYPES = (JSON, CLOUDEVENT, CLOUDEVENTS_BATCH)
JSON_ONLY = (JSON,)


def media_type(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's media type, lower case and without parameters; "" when it names none."""
    for name, value in headers:
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


def require_media_type(headers: Iterable[tuple[bytes, bytes]], accepted: tuple[str, ...]) -> str:
    """The request's media type, or 415 problem+json when it is not one of `accepted`."""
    found = media_type(headers)
    if found not in accepted:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send {', '.join(accepted)}" + (f", not {found}" if found else " (the request names none)"),
        )
    return found
