"""Writes that go on in a thread while a test does something else to the ledger (a backup, a verify)."""

from __future__ import annotations

import threading
from types import TracebackType

import httpx

from support import api
from support import events as ev

STORES = 3


class WritesUnderWay:
    """Posts batches of events (every type the workload mixes, over a few stores) until stopped,
    and remembers the source ids of those acknowledged, in order of acknowledgement."""

    def __init__(self, client: httpx.Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.acknowledged: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._round_done = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="writes-under-way", daemon=True)
        self.error: Exception | None = None

    def __enter__(self) -> WritesUnderWay:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the writes did not stop"
        if self.error is not None and kind is None:
            raise self.error

    def acknowledged_so_far(self) -> list[str]:
        with self._lock:
            return list(self.acknowledged)

    def wait_for(self, count: int) -> None:
        """Until at least `count` events are acknowledged (in total)."""
        with self._lock:
            while len(self.acknowledged) < count:
                assert self.error is None, self.error
                assert self._thread.is_alive(), "the writes stopped"
                self._round_done.wait(1.0)

    def _run(self) -> None:
        round_no = 0
        try:
            while not self._stop.is_set():
                round_no += 1
                batch = []
                for store_no in range(STORES):
                    store = f"{self.prefix}-{store_no}"
                    reservation = f"R-{round_no}"
                    batch += [
                        ev.receipt(store, ("A", 5), ("B", 2)),
                        ev.sale(store, ("A", 1), order_id=f"O-{round_no}"),
                        ev.reservation(store, reservation, ("B", 1)),
                        ev.shipment(store, ("B", 1), reservation_id=reservation),
                        ev.adjustment(store, "damaged", ("A", -1)),
                    ]
                results = api.post_events(self.client, *batch)
                with self._lock:
                    self.acknowledged.extend(e["id"] for e in batch)
                    self._round_done.notify_all()
                assert all(r["outcome"] in ("accepted", "rejected") for r in results), results
        except Exception as error:  # noqa: BLE001 (told to the test by __exit__ or wait_for)
            self.error = error
            with self._lock:
                self._round_done.notify_all()
