"""Availability policy (CONTRACT §6): the figures a safety stock and channel quotas give.

A policy belongs to a store and a SKU, or to a store as its default (`DEFAULT_SKU`) for the SKUs
without one of their own. It only ever lowers what may be reserved, sold or transferred; with no
policy every figure is the v1 one (sellable = available, no channels).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.domain.model import DEFAULT_SKU, Level, Policy


def effective_policy(store_policies: dict[str, Policy] | None, sku: str) -> Policy | None:
    """The SKU's own policy, else the store's default, else none."""
    if not store_policies:
        return None
    return store_policies.get(sku) or store_policies.get(DEFAULT_SKU)


@dataclass(frozen=True, slots=True)
class ChannelFigures:
    quota_units: int
    reserved_units: int
    sellable_units: int


@dataclass(frozen=True, slots=True)
class Figures:
    """What a stock answer says beyond the levels."""

    safety_stock_units: int
    sellable_units: int
    channels: dict[str, ChannelFigures]


NO_CHANNELS: dict[str, ChannelFigures] = {}


def figures(level: Level, policy: Policy | None) -> Figures:
    if policy is None:
        return Figures(0, level.available_units, NO_CHANNELS)
    sellable_units = level.available_units - policy.safety_stock_units
    channels = {}
    for quota in policy.quotas:
        quota_units = quota.quota_units(level.on_hand_units)
        reserved_units = level.channel_reserved_units(quota.channel)
        channels[quota.channel] = ChannelFigures(
            quota_units, reserved_units, min(sellable_units, quota_units - reserved_units)
        )
    return Figures(policy.safety_stock_units, sellable_units, channels)


def limit_units(level: Level, policy: Policy | None, channel: str | None) -> int:
    """The most a reservation, sale or transfer line may take: the channel's sellable when the
    event names a channel with a quota here, else the store's sellable."""
    if policy is None:
        return level.available_units
    sellable_units = level.available_units - policy.safety_stock_units
    quota = policy.quota(channel) if channel is not None else None
    if quota is None:
        return sellable_units
    quota_units = quota.quota_units(level.on_hand_units)
    return min(sellable_units, quota_units - level.channel_reserved_units(channel))  # type: ignore[arg-type]


def line_limit_units(
    level: Level, store_policies: dict[str, Policy] | None, sku: str, channel: str | None
) -> int:
    """The most a line of `sku` may take at a store, given every policy of that store: the one
    figure a reservation, sale or transfer is limited by and sourcing chooses stores by. A store
    without policies (the common case) needs no lookup: its figure is `available`."""
    if not store_policies:
        return level.available_units
    return limit_units(level, effective_policy(store_policies, sku), channel)
