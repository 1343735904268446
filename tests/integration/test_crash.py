"""kill -9 of the service while events stream in: every acknowledged event is in the ledger exactly once."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest
from support import api, db
from support import events as ev
from support.ids import unique

pytestmark = pytest.mark.slow

STREAMS = 4
ACKNOWLEDGED_BEFORE_KILL = 150
STREAM_DEADLINE_S = 60.0
SKUS = ("SKU-1", "SKU-2", "SKU-3")
RESEND_BATCH = 500


class Stream(threading.Thread):
    """Sends receipts with unique ids one by one until the server stops answering."""

    def __init__(self, url: str, store: str, number: int) -> None:
        super().__init__(daemon=True)
        self.url, self.store, self.number = url, store, number
        self.sent: list[dict[str, Any]] = []
        self.acknowledged: dict[str, int] = {}  # event id -> position
        self.failure: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + STREAM_DEADLINE_S
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            for i in range(100_000):
                if time.monotonic() > deadline:
                    return
                event = ev.receipt(
                    self.store,
                    (SKUS[i % len(SKUS)], 1 + (i + self.number) % 7),
                    event_id=f"s{self.number}-{i}",
                )
                self.sent.append(event)
                try:
                    response = client.post("/v1/events", json=event)
                except httpx.TransportError:
                    return  # the server is gone: this last one may or may not be recorded
                if response.status_code != 200:
                    return  # e.g. 503 while shutting down: the outcome is not known
                [result] = response.json()["results"]
                if result["outcome"] != "accepted":
                    self.failure = f"unexpected answer {result}"
                    return
                self.acknowledged[event["id"]] = result["position"]


def _acknowledged(streams: list[Stream]) -> int:
    return sum(len(s.acknowledged) for s in streams)


def test_every_acknowledged_event_survives_a_kill_9_exactly_once(database_url, serve):
    server = serve(database_url)
    store = unique("store")
    streams = [Stream(server.url, store, n) for n in range(STREAMS)]
    for stream in streams:
        stream.start()
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while _acknowledged(streams) < ACKNOWLEDGED_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _acknowledged(streams) >= ACKNOWLEDGED_BEFORE_KILL, "the streams did not get going"
    server.kill()
    for stream in streams:
        stream.join(STREAM_DEADLINE_S)
        assert not stream.is_alive()
        assert stream.failure is None, stream.failure

    server.start()
    sent = [event for stream in streams for event in stream.sent]
    acknowledged = {k: v for stream in streams for k, v in stream.acknowledged.items()}
    with server.client() as client:
        answers = []
        for start in range(0, len(sent), RESEND_BATCH):
            answers += api.post_events(client, *sent[start : start + RESEND_BATCH])
        for event, answer in zip(sent, answers, strict=True):
            if event["id"] in acknowledged:
                assert answer["outcome"] == "duplicate", (event["id"], answer)
                assert answer["original"] == {
                    "outcome": "accepted",
                    "reason": None,
                    "position": acknowledged[event["id"]],
                }
            else:  # sent when the server died: recorded before the kill or now, either way once
                assert answer["outcome"] in ("accepted", "duplicate"), answer

        expected: dict[str, int] = defaultdict(int)
        for event in sent:
            for line in event["data"]["lines"]:
                expected[line["sku"]] += line["qty"]
        head = max(a.get("position") or a["original"]["position"] for a in answers)
        levels = {sku: api.level(client, store, sku, min_position=head) for sku in SKUS}
        history = api.history(client, store)

    assert db.event_count(database_url) == len(sent)
    keys = db.query(database_url, "SELECT event_id, position FROM ledger_event_keys")
    assert len(keys) == len(sent)
    assert {
        row["event_id"]: row["position"] for row in keys if row["event_id"] in acknowledged
    } == acknowledged
    assert len(history) == len(sent)
    for sku in SKUS:
        entries = [e for e in history if e["sku"] == sku]
        assert sum(e["on_hand_delta"] for e in entries) == expected[sku]
        assert entries[-1]["on_hand"] == expected[sku]
        assert db.level_rows(database_url, store)[sku]["on_hand"] == expected[sku]
        assert api.levels_tuple(levels[sku]) == (expected[sku], 0, expected[sku], 0)
