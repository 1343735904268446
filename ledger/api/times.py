"""Times given as query parameters (`as_of`, `from`, `occurred_to`, ...): RFC 3339 with an offset,
as event times are (CONTRACT §1); anything else answers 422 naming the parameter."""

from __future__ import annotations

from datetime import datetime

from ledger.api.problems import invalid
from ledger.clock import utc_text
from ledger.intake.envelope import FieldError, parse_rfc3339


def time_parameter(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = parse_rfc3339(value)
    if moment is None:
        raise invalid([FieldError(name, "must be an RFC 3339 time with an offset")])
    return moment


def utc_parameter(name: str, value: str | None) -> str | None:
    """The time as the history stores it (UTC text), for a comparison in SQL."""
    moment = time_parameter(name, value)
    return None if moment is None else utc_text(moment)
