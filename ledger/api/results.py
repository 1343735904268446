"""How an event's outcome is written in a response or on the results topic (CONTRACT §1, §2)."""

from __future__ import annotations

from typing import Any

from ledger.results import EventResult


def result_public(result: EventResult) -> dict[str, Any]:
    body: dict[str, Any] = {"id": result.event_id, "source": result.source, "outcome": result.outcome.value}
    if result.reason is not None:
        body["reason"] = result.reason.value
    if result.shortfall:
        body["shortfall"] = [
            {"sku": s.sku, "requested": s.requested_units, "available": s.available_units}
            for s in result.shortfall
        ]
    if result.position is not None:
        body["position"] = result.position
    if result.original is not None:
        body["original"] = {
            "outcome": result.original.outcome.value,
            "reason": result.original.reason.value if result.original.reason else None,
            "position": result.original.position,
        }
    return body
