"""The fields a REST body may hold, and a refusal naming each one it may not.

A field the API does not know was dropped in silence: a typo such as `expire_at` for `expires_at`
placed a reservation that never expires, holding its stock until someone noticed. Every REST body
now answers 422 naming such a field, as a policy's did already (CONTRACT §6: invalid bodies are
422 naming the field). Events (`POST /v1/events`, Kafka, import) keep CloudEvents' rule: their
`data` is the producer's, and what the ledger does not read in it is kept out of the way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ledger.intake.envelope import FieldError

POLICY_FIELDS = ("safety_stock", "channels")
RESERVATION_FIELDS = ("reservation_id", "order_id", "lines", "expires_at", "channel")
RESERVATION_LINE_FIELDS = ("sku", "qty", "uom", "codes")
RELEASE_FIELDS = ("lines",)
RELEASE_LINE_FIELDS = ("sku", "qty", "uom")
ACROSS_LINE_FIELDS = ("store", *RESERVATION_LINE_FIELDS)
SOURCING_FIELDS = ("lines", "stores", "channel", "max_stores", "reserve")
SOURCING_LINE_FIELDS = RESERVATION_LINE_FIELDS
SOURCING_RESERVE_FIELDS = ("reservation_id", "order_id", "expires_at")


def unknown_fields(
    body: dict[str, Any],
    allowed: tuple[str, ...],
    what: str,
    line_allowed: tuple[str, ...] = (),
    prefix: str = "",
) -> list[FieldError]:
    """A FieldError for each key of `body` (and, with `line_allowed`, of each object in its `lines`)
    that is not allowed; `what` names the body in the message, `prefix` where it sits in a larger
    one (`reserve.`)."""
    errors = [_unknown(prefix + key, allowed, what) for key in body if key not in allowed]
    lines = body.get("lines")
    if line_allowed and isinstance(lines, list):
        for number, line in enumerate(lines):
            if isinstance(line, dict):
                errors += [
                    _unknown(f"lines[{number}].{key}", line_allowed, "line")
                    for key in line
                    if key not in line_allowed
                ]
    return errors


def _unknown(field: str, allowed: Iterable[str], what: str) -> FieldError:
    return FieldError(field, f"is not a field of a {what} ({', '.join(allowed)})")
