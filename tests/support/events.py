"""CloudEvents envelopes of the ledger's event types (CONTRACT §1), as producers send them."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.domain.model import StockEvent
    from ledger.intake.envelope import IntakeLimits

_ids = itertools.count(1)
SOURCE = "tests/producer"


def now_rfc3339(offset_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat()


def lines(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"sku": sku, "qty": qty} for sku, qty in pairs]


def envelope(
    event_type: str,
    store: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    source: str = SOURCE,
    time: str | None = None,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id or f"evt-{next(_ids)}-{datetime.now(UTC).timestamp():.6f}",
        "source": source,
        "type": event_type,
        "time": time or now_rfc3339(),
        "subject": store,
        "datacontenttype": "application/json",
        "data": data,
    }


def receipt(store: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    return envelope("stock.receipt", store, {"lines": lines(*pairs), **extra}, event_id=event_id)


def sale(store: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    return envelope("stock.sale", store, {"lines": lines(*pairs), **extra}, event_id=event_id)


def pos_sale(store: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    return envelope("stock.pos_sale", store, {"lines": lines(*pairs), **extra}, event_id=event_id)


def reservation(store: str, reservation_id: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    data = {"reservation_id": reservation_id, "lines": lines(*pairs), **extra}
    return envelope("stock.reservation", store, data, event_id=event_id)


def release(store: str, reservation_id: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    data: dict[str, Any] = {"reservation_id": reservation_id, **extra}
    if pairs:
        data["lines"] = lines(*pairs)
    return envelope("stock.reservation_release", store, data, event_id=event_id)


def shipment(store: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    return envelope("stock.shipment", store, {"lines": lines(*pairs), **extra}, event_id=event_id)


def stock_return(store: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    return envelope("stock.return", store, {"lines": lines(*pairs), **extra}, event_id=event_id)


def adjustment(store: str, reason: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    return envelope(
        "stock.adjustment", store, {"lines": lines(*pairs), "reason": reason, **extra}, event_id=event_id
    )


def count(store: str, *pairs: tuple[str, int], **extra: Any) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    return envelope("stock.count", store, {"lines": lines(*pairs), **extra}, event_id=event_id)


def transfer(
    store: str, to_store: str, transfer_id: str, *pairs: tuple[str, int], **extra: Any
) -> dict[str, Any]:
    event_id = extra.pop("event_id", None)
    data = {"lines": lines(*pairs), "to_store": to_store, "transfer_id": transfer_id, **extra}
    return envelope("stock.transfer", store, data, event_id=event_id)


def stock_event(
    event_id: str,
    event_type: str,
    store: str,
    pairs: list[tuple[str, int]],
    *,
    source: str = SOURCE,
    **data: Any,
) -> StockEvent:
    """An envelope as the ledger reads it (its own validation), for tests that drive the writer
    without HTTP or Kafka. No pairs: an envelope without lines."""
    from ledger.intake.envelope import read_envelope

    body = ({"lines": lines(*pairs)} if pairs else {}) | data
    return read_envelope(
        envelope(event_type, store, body, event_id=event_id, source=source), _limits_of_environment()
    )


_limits_by_environment: dict[frozenset[tuple[str, str]], IntakeLimits] = {}


def _limits_of_environment() -> IntakeLimits:
    """The intake limits `Settings()` reads from the environment, built once per distinct set of
    LEDGER_ variables (in any case, as the settings read them): building the settings takes
    milliseconds, and some tests make thousands of events."""
    from ledger.bootstrap import intake_limits
    from ledger.config import Settings

    key = frozenset((name, value) for name, value in os.environ.items() if name.upper().startswith("LEDGER_"))
    if (limits := _limits_by_environment.get(key)) is None:
        limits = _limits_by_environment[key] = intake_limits(Settings())
    return limits
