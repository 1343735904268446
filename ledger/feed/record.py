"""One record of the availability feed (`stock.levels`, CONTRACT §9): its one definition, encoder
and decoder, shared by the publisher, the tests and any consumer in this repository."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ledger.domain.model import Level, Policy
from ledger.domain.policy import figures

FIELDS = (
    "store_id",
    "sku",
    "position",
    "on_hand",
    "reserved",
    "available",
    "incoming",
    "safety_stock",
    "sellable",
    "channels",
    "recorded_at",
)
CHANNEL_FIELDS = ("quota", "reserved", "sellable")


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    quota_units: int
    reserved_units: int
    sellable_units: int


@dataclass(frozen=True, slots=True)
class LevelRecord:
    """A store and SKU's figures as of `position` (the last entry that changed them), recorded at
    `recorded_at` (that entry's recording time, UTC text as the history shows it)."""

    store_id: str
    sku: str
    position: int
    on_hand_units: int
    reserved_units: int
    incoming_units: int
    safety_stock_units: int
    sellable_units: int
    channels: dict[str, ChannelRecord]
    recorded_at: str

    @property
    def available_units(self) -> int:
        return self.on_hand_units - self.reserved_units

    @property
    def key(self) -> bytes:
        """The Kafka record key: the store id, so that one store's records keep their order."""
        return self.store_id.encode()


def record_of(
    store_id: str, sku: str, position: int, level: Level, policy: Policy | None, recorded_at: str
) -> LevelRecord:
    """The record of a level and the policy that applied to it, with the figures a stock answer
    gives (ledger/domain/policy.py, the same function)."""
    shown = figures(level, policy)
    return LevelRecord(
        store_id,
        sku,
        position,
        level.on_hand_units,
        level.reserved_units,
        level.incoming_units,
        shown.safety_stock_units,
        shown.sellable_units,
        {
            name: ChannelRecord(c.quota_units, c.reserved_units, c.sellable_units)
            for name, c in sorted(shown.channels.items())
        },
        recorded_at,
    )


def encode_record(record: LevelRecord) -> bytes:
    return orjson.dumps(
        {
            "store_id": record.store_id,
            "sku": record.sku,
            "position": record.position,
            "on_hand": record.on_hand_units,
            "reserved": record.reserved_units,
            "available": record.available_units,
            "incoming": record.incoming_units,
            "safety_stock": record.safety_stock_units,
            "sellable": record.sellable_units,
            "channels": {
                name: {"quota": c.quota_units, "reserved": c.reserved_units, "sellable": c.sellable_units}
                for name, c in record.channels.items()
            },
            "recorded_at": record.recorded_at,
        }
    )


def decode_record(value: bytes) -> LevelRecord:
    """The record a value holds; an unexpected value is an assertion that names it."""
    body: Any = orjson.loads(value)
    assert isinstance(body, dict) and tuple(body) == FIELDS, f"not a stock.levels record: {value!r}"
    channels = body["channels"]
    assert isinstance(channels, dict), f"not a stock.levels record (channels): {value!r}"
    record = LevelRecord(
        body["store_id"],
        body["sku"],
        int(body["position"]),
        int(body["on_hand"]),
        int(body["reserved"]),
        int(body["incoming"]),
        int(body["safety_stock"]),
        int(body["sellable"]),
        {
            name: ChannelRecord(int(c["quota"]), int(c["reserved"]), int(c["sellable"]))
            for name, c in channels.items()
        },
        body["recorded_at"],
    )
    assert record.available_units == body["available"], f"available is not on_hand - reserved: {value!r}"
    return record
