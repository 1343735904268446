"""schemas/event-envelope.schema.json, the schema producers and schema registries check events with,
agrees with the service: it accepts the README walkthrough's events and refuses what the service
refuses (422 over HTTP, `invalid` in a batch)."""

from __future__ import annotations

import copy
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "event-envelope.schema.json").read_text())
VALIDATOR = jsonschema_rs.validator_for(SCHEMA, validate_formats=True)


def walkthrough_envelopes() -> list[dict[str, Any]]:
    """Every envelope the README posts to /v1/events."""
    readme = (ROOT / "README.md").read_text()
    bodies = re.findall(r"/v1/events [^\n]*-d '(\{.*?\})'", readme, flags=re.DOTALL)
    assert len(bodies) >= 4, "the README's walkthrough posts events"
    return [json.loads(body) for body in bodies]


WALKTHROUGH = walkthrough_envelopes()
RECEIPT = WALKTHROUGH[0]


def _with(change: dict[str, Any], **data: Any) -> dict[str, Any]:
    envelope = copy.deepcopy(RECEIPT)
    envelope.update(change)
    envelope["data"].update(data)
    return envelope


def _line(qty: Any) -> list[dict[str, Any]]:
    return [{"sku": "SKU-1", "qty": qty}]


INVALID = {
    "specversion 0.3": _with({"specversion": "0.3"}),
    "no id": {k: v for k, v in RECEIPT.items() if k != "id"},
    "empty source": _with({"source": ""}),
    "unknown type": _with({"type": "stock.teleport"}),
    "a type the ledger records itself": _with({"type": "stock.reservation_expired"}),
    "time without offset": _with({"time": "2026-11-22T09:00:00"}),
    "time not a time": _with({"time": "yesterday"}),
    "subject with a slash": _with({"subject": "store/12"}),
    "subject of 65 characters": _with({"subject": "s" * 65}),
    "the ledger's own source": _with({"source": "ledger/expiry"}),
    "data not an object": {**RECEIPT, "data": []},
    "no lines": _with({}, lines=[]),
    "receipt of 0": _with({}, lines=_line(0)),
    "receipt of -1": _with({}, lines=_line(-1)),
    "qty over a billion": _with({}, lines=_line(1_000_000_001)),
    "qty not an integer": _with({}, lines=_line(1.5)),
    "qty a string": _with({}, lines=_line("2")),
    "sku missing": _with({}, lines=[{"qty": 1}]),
    "adjustment of 0": _with({"type": "stock.adjustment"}, lines=_line(0), reason="found"),
    "adjustment without reason": _with({"type": "stock.adjustment"}, lines=_line(-2)),
    "count below 0": _with({"type": "stock.count"}, lines=_line(-1)),
    "reservation without id": _with({"type": "stock.reservation"}),
    "transfer without to_store": _with({"type": "stock.transfer"}, transfer_id="t-1"),
    "reference too long": _with({}, reference="r" * 257),
    "expires_at not a time": _with({"type": "stock.reservation"}, reservation_id="r-1", expires_at="soon"),
    "datacontenttype xml": _with({"datacontenttype": "application/xml"}),
}
VALID = {
    "adjustment of -2": _with({"type": "stock.adjustment"}, lines=_line(-2), reason="damaged"),
    "count of 0": _with({"type": "stock.count"}, lines=_line(0)),
    "release without lines": {
        **_with({"type": "stock.reservation_release"}, reservation_id="r-9"),
        "data": {"reservation_id": "r-9"},
    },
    "transfer": _with(
        {"type": "stock.transfer", "subject": "store-91"}, to_store="store-92", transfer_id="t-1"
    ),
}


def _sent(client: httpx.Client, envelope: dict[str, Any]) -> int:
    """The status the service answers the envelope with, under a fresh id at a store of its own."""
    fresh = copy.deepcopy(envelope)
    if isinstance(fresh.get("id"), str):
        fresh["id"] = f"{fresh['id']}-{uuid.uuid4().hex[:8]}"
    return client.post("/v1/events", json=fresh).status_code


@pytest.mark.parametrize("envelope", WALKTHROUGH, ids=[e["id"] for e in WALKTHROUGH])
def test_the_walkthrough_events_are_valid(envelope: dict[str, Any]) -> None:
    VALIDATOR.validate(envelope)


@pytest.mark.parametrize("name", sorted(VALID))
def test_what_the_service_accepts_the_schema_accepts(name: str, client: httpx.Client) -> None:
    assert _sent(client, VALID[name]) == 200
    VALIDATOR.validate(VALID[name])


@pytest.mark.parametrize("name", sorted(INVALID))
def test_what_the_service_refuses_the_schema_refuses(name: str, client: httpx.Client) -> None:
    assert _sent(client, INVALID[name]) == 422
    assert not VALIDATOR.is_valid(INVALID[name])
