"""A client that writes one event at a time on one keep-alive connection for as long as it runs,
and keeps when each write was acknowledged: the longest gap between two acknowledgements is how
long the writes paused. A receipt, a reservation, its release, in turn, at a store of its own: the
log and every projection a batch writes to are touched. Used by rebuild_bench.py and
vacuum_bench.py."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import uuid
from typing import Any

CLIENT_TIMEOUT_S = 120.0  # one write's answer: a pause longer than this is a failure anyway


class WriterClient:
    """Posts one event at a time on one keep-alive connection until stopped, and keeps the time of
    every acknowledgement; a write that is not accepted stops it with the answer as its error."""

    def __init__(self, port: int, source: str) -> None:
        self.port = port
        self.source = source  # the events' source, by which the caller finds them in the ledger
        self.acknowledged_at: list[float] = []
        self.ids: list[str] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer-client", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # not when it never started (its server never became ready)
            self._thread.join(CLIENT_TIMEOUT_S + 5)

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time between two acknowledgements (or the window's ends) within [since, until]."""
        with self._lock:
            if self.acknowledged_at:
                since = max(since, self.acknowledged_at[0])  # not before the client's first write
            times = [since, *(t for t in self.acknowledged_at if since <= t <= until), until]
        return max(b - a for a, b in itertools.pairwise(times))

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_S)
        store = f"bench-writer-{uuid.uuid4().hex[:6]}"
        number = 0
        try:
            while not self._stop.is_set():
                number += 1
                kind = ("receipt", "reservation", "release")[number % 3]
                event_id = f"w-{store[-6:]}-{number}"  # unique to this client: others may share the source
                event = _event(self.source, store, kind, event_id, number)
                conn.request(
                    "POST",
                    "/v1/events",
                    body=json.dumps([event]),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    self.error = f"{response.status} {body[:300]!r}"
                    return
                [result] = json.loads(body)["results"]
                if result["outcome"] not in ("accepted", "rejected"):
                    self.error = f"answered {result}"
                    return
                with self._lock:
                    self.acknowledged_at.append(time.monotonic())
                    self.ids.append(event_id)
        except Exception as error:  # noqa: BLE001 (reported by the round)
            self.error = repr(error)
        finally:
            conn.close()


def _event(source: str, store: str, kind: str, event_id: str, number: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if kind == "receipt":
        data["lines"] = [{"sku": "SKU-W", "qty": 2}]
        type_ = "stock.receipt"
    elif kind == "reservation":
        data |= {"reservation_id": f"R-{number}", "lines": [{"sku": "SKU-W", "qty": 1}]}
        type_ = "stock.reservation"
    else:
        data |= {"reservation_id": f"R-{number - 1}"}
        type_ = "stock.reservation_release"
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": type_,
        "time": "2026-12-01T10:00:00Z",
        "subject": store,
        "datacontenttype": "application/json",
        "data": data,
    }
