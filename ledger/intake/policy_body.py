"""Reads a policy as `PUT /v1/stores/{store}/policies/{sku}` receives it (CONTRACT §6), naming
every wrong field. `{}` clears the policy: read as None."""

from __future__ import annotations

from typing import Any

from ledger.domain.ids import ID_PATTERN
from ledger.domain.model import ChannelQuota, Policy
from ledger.intake.body_fields import POLICY_FIELDS, unknown_fields
from ledger.intake.envelope import QTY_ABS_MAX, FieldError, InvalidEvent

QUOTA_PCT_MAX = 100


def _whole(value: Any, field: str, maximum: int, errors: list[FieldError]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        errors.append(FieldError(field, f"must be an integer from 0 to {maximum}"))
        return None
    return value


def read_policy(body: object, channels_max: int) -> Policy | None:
    """The policy in a request body, None for `{}`; InvalidEvent names each wrong field."""
    if not isinstance(body, dict):
        raise InvalidEvent([FieldError("", "the body must be a JSON object")])
    if not body:
        return None
    errors = unknown_fields(body, POLICY_FIELDS, "policy")
    safety_stock = _whole(body.get("safety_stock", 0), "safety_stock", QTY_ABS_MAX, errors)
    channels = body.get("channels", {})
    quotas: list[ChannelQuota] = []
    if not isinstance(channels, dict):
        errors.append(FieldError("channels", "must be an object keyed by channel"))
    elif len(channels) > channels_max:
        errors.append(FieldError("channels", f"at most {channels_max} channels"))
    else:
        for name, quota in sorted(channels.items()):
            quotas.extend(_quota(name, quota, errors))
    if errors:
        raise InvalidEvent(errors)
    assert safety_stock is not None
    return Policy(safety_stock, tuple(quotas))


def _quota(name: str, quota: object, errors: list[FieldError]) -> list[ChannelQuota]:
    where = f"channels.{name}"
    if not ID_PATTERN.fullmatch(name):
        errors.append(FieldError(where, "a channel is 1 to 64 ASCII letters, digits or -_.: characters"))
        return []
    if not isinstance(quota, dict):
        errors.append(FieldError(where, "must be an object: {quota_pct} or {quota_units}"))
        return []
    unknown = [key for key in quota if key not in ("quota_pct", "quota_units")]
    for key in unknown:
        errors.append(FieldError(f"{where}.{key}", "is not a field of a quota (quota_pct, quota_units)"))
    has_pct, has_units = "quota_pct" in quota, "quota_units" in quota
    if has_pct == has_units:
        errors.append(FieldError(where, "give quota_pct or quota_units, exactly one"))
        return []
    if has_pct:
        pct = _whole(quota["quota_pct"], f"{where}.quota_pct", QUOTA_PCT_MAX, errors)
        return [ChannelQuota(name, pct=pct)] if pct is not None and not unknown else []
    units = _whole(quota["quota_units"], f"{where}.quota_units", QTY_ABS_MAX, errors)
    return [ChannelQuota(name, units=units)] if units is not None and not unknown else []
