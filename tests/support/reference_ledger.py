"""A reference model of CONTRACT §1 and §6 in plain dicts, written from the contract's table and
§6's figures, not from ledger.domain.rules (tests/unit/test_reference_model.py runs both side by
side). It counts a channel's reserved units from its open reservations each time; the rules keep a
running count on the level."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.domain.model import DEFAULT_SKU, ChannelQuota, Policy

UNKNOWN_RESERVATION_ID = "R404"
EVENT_TIME = datetime(2026, 11, 22, 7, 15, tzinfo=UTC)


def as_policy(planned: dict[str, Any] | None) -> Policy | None:
    """The ledger's Policy for a policy in this model's form (None: cleared)."""
    if planned is None:
        return None
    quotas = tuple(
        ChannelQuota(name, pct=amount) if kind == "pct" else ChannelQuota(name, units=amount)
        for name, (kind, amount) in sorted(planned["channels"].items())
    )
    return Policy(planned["safety_stock"], quotas)


@dataclass
class Expected:
    """What the contract says one event does. `effects` maps a store to its lines' (sku, deltas, flags)."""

    outcome: str
    reason: str | None = None
    shortfall: list[tuple[str, int, int]] = field(default_factory=list)
    effects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    duplicate_of: int | None = None


class ReferenceLedger:
    """The contract's ledger in plain dicts.

    levels[(store, sku)] = {"on_hand", "reserved", "incoming"}
    reservations[(store, id)] = {"lines": {sku: {"qty", "shipped", "released"}}, "order_id", "closed",
    "position"}, where "closed" names what took the last reserved unit (shipment, release or expiry).
    """

    def __init__(self) -> None:
        self.levels: dict[tuple[str, str], dict[str, int]] = {}
        self.reservations: dict[tuple[str, str], dict[str, Any]] = {}
        # policies[(store, sku or "*")] = {"safety_stock": N, "channels": {name: ("pct" | "units", N)}}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.position = 0

    # policies (CONTRACT §6)

    def policy(self, store: str, sku: str) -> dict[str, Any] | None:
        return self.policies.get((store, sku)) or self.policies.get((store, DEFAULT_SKU))

    def channel_reserved(self, store: str, sku: str, channel: str) -> int:
        """The units reserved now under reservations of that channel at that store and SKU."""
        return sum(
            self.remaining(res["lines"][sku])
            for (res_store, _), res in self.reservations.items()
            if res_store == store and res["channel"] == channel and sku in res["lines"]
        )

    def figures(self, store: str, sku: str) -> tuple[int, int, dict[str, tuple[int, int, int]]]:
        """(safety_stock, sellable, {channel: (quota, reserved, sellable)}), as §6 defines them."""
        policy = self.policy(store, sku)
        available = self.available(store, sku)
        if policy is None:
            return 0, available, {}
        sellable = available - policy["safety_stock"]
        channels = {}
        for name, (kind, amount) in policy["channels"].items():
            on_hand = self.level(store, sku)["on_hand"]
            quota = amount if kind == "units" else max(0, (on_hand * amount) // 100)
            reserved = self.channel_reserved(store, sku, name)
            channels[name] = (quota, reserved, min(sellable, quota - reserved))
        return policy["safety_stock"], sellable, channels

    def limit(self, store: str, sku: str, channel: str | None) -> int:
        """The figure that applies to a line of a reservation, sale or transfer."""
        _, sellable, channels = self.figures(store, sku)
        if channel is not None and channel in channels:
            return channels[channel][2]
        return sellable

    # levels

    def level(self, store: str, sku: str) -> dict[str, int]:
        return self.levels.setdefault((store, sku), {"on_hand": 0, "reserved": 0, "incoming": 0})

    def available(self, store: str, sku: str) -> int:
        level = self.level(store, sku)
        return level["on_hand"] - level["reserved"]

    @staticmethod
    def remaining(res_line: dict[str, int]) -> int:
        return res_line["qty"] - res_line["shipped"] - res_line["released"]

    def status(self, store: str, reservation_id: str) -> str:
        res = self.reservations[(store, reservation_id)]
        lines = res["lines"].values()
        if all(line["shipped"] == line["qty"] for line in lines):
            return "shipped"
        if sum(self.remaining(line) for line in lines) == 0:
            # released/expired when what remained was released/expired, even after partial shipments;
            # a shipment that takes the last reserved unit after a partial release closes it as shipped
            return str(res["closed"])
        if any(line["shipped"] > 0 for line in lines):
            return "partially_shipped"
        return "active"

    # events

    def handle(self, ev: dict[str, Any]) -> Expected:
        """Decides and applies one producer event (a plain dict) and says what should have happened."""
        kind = ev["type"]
        store = ev["store"]
        lines: list[tuple[str, int]] = ev["lines"]

        def line_effect(
            sku: str,
            qty: int,
            on_hand: int = 0,
            reserved: int = 0,
            incoming: int = 0,
            oversold: bool = False,
            unknown: bool = False,
        ) -> dict[str, Any]:
            return {
                "sku": sku,
                "qty": qty,
                "on_hand": on_hand,
                "reserved": reserved,
                "incoming": incoming,
                "oversold": oversold,
                "unknown_reservation": unknown,
            }

        def rejected(reason: str, shortfall: list[tuple[str, int, int]] | None = None) -> Expected:
            self.position += 1
            return Expected(
                "rejected", reason, shortfall or [], {store: [line_effect(sku, qty) for sku, qty in lines]}
            )

        def short_lines() -> list[tuple[str, int, int]]:
            channel = ev.get("channel") if kind in ("sale", "reservation") else None
            return [
                (sku, qty, self.limit(store, sku, channel))
                for sku, qty in lines
                if self.limit(store, sku, channel) < qty
            ]

        if kind == "policy_changed":
            return self._change_policy(store, lines[0][0], ev["policy"], line_effect(lines[0][0], 0))

        if kind == "reservation":
            held = self.reservations.get((store, ev["reservation_id"]))
            if held is not None:
                if {sku: line["qty"] for sku, line in held["lines"].items()} == dict(lines):
                    return Expected("duplicate", duplicate_of=held["position"])
                return rejected("reservation_conflict")
        if kind in ("sale", "transfer", "reservation"):
            short = short_lines()
            if short:
                return rejected("insufficient_stock", short)
        if kind == "reservation_release" and (store, ev["reservation_id"]) not in self.reservations:
            return rejected("unknown_reservation")

        self.position += 1
        effects: list[dict[str, Any]] = []
        if kind == "receipt":
            incoming_sign = -1 if ev.get("transfer_id") else 0
            effects = [line_effect(sku, qty, on_hand=qty, incoming=incoming_sign * qty) for sku, qty in lines]
        elif kind in ("sale", "transfer"):
            effects = [line_effect(sku, qty, on_hand=-qty) for sku, qty in lines]
        elif kind == "pos_sale":
            effects = [
                line_effect(sku, qty, on_hand=-qty, oversold=self.available(store, sku) - qty < 0)
                for sku, qty in lines
            ]
        elif kind in ("return", "adjustment"):
            effects = [line_effect(sku, qty, on_hand=qty) for sku, qty in lines]
        elif kind == "count":
            effects = [
                line_effect(sku, qty, on_hand=qty - self.level(store, sku)["on_hand"]) for sku, qty in lines
            ]
        elif kind == "reservation":
            effects = [line_effect(sku, qty, reserved=qty) for sku, qty in lines]
            self.reservations[(store, ev["reservation_id"])] = {
                "lines": {sku: {"qty": qty, "shipped": 0, "released": 0} for sku, qty in lines},
                "order_id": ev.get("order_id"),
                "closed": None,
                "position": self.position,
                "channel": ev.get("channel"),
            }
        elif kind == "reservation_release":
            effects = self._release(
                self.reservations[(store, ev["reservation_id"])], lines or None, "released"
            )
        elif kind == "expire":
            effects = self._release(self.reservations[(store, ev["reservation_id"])], None, "expired")
        elif kind == "shipment":
            effects = self._ship(store, ev.get("reservation_id"), lines)
        else:
            raise AssertionError(kind)

        expected = Expected("accepted", effects={store: effects})
        if kind == "transfer":
            expected.effects[ev["to_store"]] = [line_effect(sku, qty, incoming=qty) for sku, qty in lines]
        for effect_store, store_effects in expected.effects.items():
            for effect in store_effects:
                level = self.level(effect_store, effect["sku"])
                for name in ("on_hand", "reserved", "incoming"):
                    level[name] += effect[name]
        return expected

    def _change_policy(
        self, store: str, key: str, policy: dict[str, Any] | None, effect: dict[str, Any]
    ) -> Expected:
        """A policy set or cleared: one line with zero deltas; nothing when nothing changes."""
        if self.policies.get((store, key)) == policy:
            return Expected("duplicate", duplicate_of=0)
        self.position += 1
        if policy is None:
            del self.policies[(store, key)]
        else:
            self.policies[(store, key)] = policy
        return Expected("accepted", effects={store: [effect]})

    def _release(
        self, held: dict[str, Any], lines: list[tuple[str, int]] | None, closed_as: str
    ) -> list[dict[str, Any]]:
        """reserved −= what is still reserved (all of it, or up to each given line's qty)."""
        asked = (
            lines
            if lines is not None
            else [(sku, self.remaining(line)) for sku, line in held["lines"].items()]
        )
        effects = []
        released_total = 0
        for sku, qty in asked:
            res_line = held["lines"].get(sku)
            released = min(qty, self.remaining(res_line)) if res_line else 0
            if res_line:
                res_line["released"] += released
            released_total += released
            effects.append(
                {
                    "sku": sku,
                    "qty": qty,
                    "on_hand": 0,
                    "reserved": -released,
                    "incoming": 0,
                    "oversold": False,
                    "unknown_reservation": False,
                }
            )
        if released_total > 0 and all(self.remaining(line) == 0 for line in held["lines"].values()):
            held["closed"] = closed_as
        return effects

    def _ship(
        self, store: str, reservation_id: str | None, lines: list[tuple[str, int]]
    ) -> list[dict[str, Any]]:
        """on_hand −= qty; under a known reservation reserved −= min(qty, still reserved)."""
        held = self.reservations.get((store, reservation_id)) if reservation_id else None
        unknown = reservation_id is not None and held is None
        effects = []
        for sku, qty in lines:
            res_line = held["lines"].get(sku) if held else None
            consumed = min(qty, self.remaining(res_line)) if res_line else 0
            if res_line:
                res_line["shipped"] += consumed
                if consumed and all(self.remaining(line) == 0 for line in held["lines"].values()):
                    held["closed"] = "shipped"
            level = self.level(store, sku)
            available_after = (level["on_hand"] - qty) - (level["reserved"] - consumed)
            effects.append(
                {
                    "sku": sku,
                    "qty": qty,
                    "on_hand": -qty,
                    "reserved": -consumed,
                    "incoming": 0,
                    "oversold": available_after < 0,
                    "unknown_reservation": unknown,
                }
            )
        return effects
