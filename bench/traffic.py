"""The intake figure's events: the Retailer model (devtools/retailer.py) cut to six kinds, and the levels
that its accepted events must leave behind (CONTRACT §1), to check a ledger against."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any
from unittest import mock

import orjson
from plumbing import BenchError

from devtools import retailer

# The Retailer's own weights for the kinds that the hand-written baseline has UPDATEs for; its
# returns, transfers, counts and adjustments are left out. (The model picks kinds from its module's
# WEIGHTS table; Traffic has no field for it.)
KINDS: dict[str, int] = {
    kind: retailer.WEIGHTS[kind]
    for kind in (
        "stock.pos_sale",
        "stock.receipt",
        "stock.reservation",
        "stock.shipment",
        "stock.reservation_release",
        "stock.sale",
    )
}

Ident = tuple[str, str]  # (source, id): what makes an event a duplicate of another
Level = tuple[int, int]  # (on_hand, reserved)


@dataclass(frozen=True, slots=True)
class Record:
    """One record as produced: its key (the store), its value, what it is, and the event in it."""

    key: bytes
    value: bytes | None
    kind: str  # an event type, "duplicate", or "junk:<why>"
    event: dict[str, Any] | None  # None for junk

    @property
    def ident(self) -> Ident | None:
        return None if self.event is None else (self.event["source"], self.event["id"])


@dataclass(frozen=True, slots=True)
class Made:
    """The records, in the order produced, and the catalogue they are drawn from."""

    records: list[Record]
    stores: list[str]
    skus: list[str]


def make(stores: int, skus: int, events: int, duplicate_share: float, junk_share: float, seed: int) -> Made:
    """`events` records of the six kinds: each store opens with a delivery, then the day's traffic.
    No reservation expires during a run (they last two days), so the levels depend on the order only."""
    traffic = retailer.Traffic(
        stores=stores,
        skus=skus,
        events=events,
        duplicate_share=duplicate_share,
        junk_share=junk_share,
        expiring_share=0.0,
        seed=seed,
        run_id="bench",
    )
    model = retailer.Retailer(traffic)
    with mock.patch.dict(retailer.WEIGHTS, KINDS, clear=True):
        made = list(model.records())
    records = [
        Record(
            (record.key or "").encode(),
            record.value,
            record.kind,
            None if record.kind.startswith("junk:") else orjson.loads(record.value or b""),
        )
        for record in made
    ]
    return Made(records, list(model.stores), list(model.skus))


def describe(records: list[Record]) -> str:
    kinds = Counter(
        "junk" if record.kind.startswith("junk:") else record.kind.removeprefix("stock.")
        for record in records
    )
    lines = [len(record.event["data"].get("lines", [])) for record in records if record.event]
    return (
        ", ".join(f"{kind} {count:,}" for kind, count in kinds.most_common())
        + f"; {sum(lines) / max(1, len(lines)):.1f} lines an event"
    )


def expected_levels(records: list[Record], first_outcomes: dict[Ident, str]) -> dict[tuple[str, str], Level]:
    """(store, sku) → (on_hand, reserved) after the accepted events, applied in the order produced
    (one store's events keep their order on Kafka and over HTTP; stores do not touch each other)."""
    on_hand: Counter[tuple[str, str]] = Counter()
    reserved: Counter[tuple[str, str]] = Counter()
    held: dict[tuple[str, str], dict[str, int]] = {}  # (store, reservation id) → units still reserved
    seen: set[Ident] = set()
    for record in records:
        ident, event = record.ident, record.event
        if ident is None or event is None or ident in seen:
            continue  # junk, or a duplicate: neither changes anything
        seen.add(ident)
        if first_outcomes.get(ident) != "accepted":
            continue
        store, kind, data = event["subject"], event["type"], event["data"]
        lines = {line["sku"]: int(line["qty"]) for line in data.get("lines", [])}
        if kind == "stock.receipt":
            on_hand.update({(store, sku): qty for sku, qty in lines.items()})
        elif kind in ("stock.pos_sale", "stock.sale"):
            on_hand.subtract({(store, sku): qty for sku, qty in lines.items()})
        elif kind == "stock.reservation":
            reserved.update({(store, sku): qty for sku, qty in lines.items()})
            held[(store, data["reservation_id"])] = dict(lines)
        elif kind == "stock.shipment":
            remaining = held.get((store, data.get("reservation_id", "")), {})
            for sku, qty in lines.items():
                taken = min(qty, remaining.get(sku, 0))
                remaining[sku] = remaining.get(sku, 0) - taken
                on_hand[(store, sku)] -= qty
                reserved[(store, sku)] -= taken
        elif kind == "stock.reservation_release":
            for sku, units in held.pop((store, data["reservation_id"]), {}).items():
                reserved[(store, sku)] -= units
        else:
            raise BenchError(f"the reference has no rule for {kind} (event {ident})")
    keys = set(on_hand) | set(reserved)
    return {key: (on_hand[key], reserved[key]) for key in keys}


def level_mismatches(
    expected: dict[tuple[str, str], Level], found: dict[tuple[str, str], Level]
) -> list[str]:
    """Every (store, sku) whose level differs, as readable lines (a SKU missing on either side is 0)."""
    wrong = []
    for key in sorted(set(expected) | set(found)):
        want, got = expected.get(key, (0, 0)), found.get(key, (0, 0))
        if want != got:
            wrong.append(f"{key[0]}/{key[1]}: (on_hand, reserved) {got}, expected {want}")
    return wrong


def first_outcomes(results: list[dict[str, Any]]) -> dict[Ident, str]:
    """Each event's outcome the first time it was seen (later copies are answered `duplicate`)."""
    outcomes: dict[Ident, str] = {}
    for result in results:
        outcomes.setdefault((result["source"], result["id"]), result["outcome"])
    return outcomes


def stores_in_order(records: list[Record]) -> dict[str, list[bytes]]:
    """Each store's events (junk left out), as produced."""
    by_store: dict[str, list[bytes]] = {}
    for record in records:
        if record.event is not None and record.value is not None:
            by_store.setdefault(record.event["subject"], []).append(record.value)
    return by_store
