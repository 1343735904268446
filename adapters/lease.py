"""One worker pushes a target at a time: the target's lease, a row of `adapter_positions` naming its
holder and until when it holds it.

A worker takes the lease for its cycle, renews it before each batch, and while a batch is being
pushed a keeper thread renews it every RENEW_EVERY_SHARE of LEASE_S: one push may outlast the lease
(a MoySklad batch of many orders under its rate limit, a Bitrix full push at 2 requests a second),
and a worker whose lease ran out during its own push would meet another worker's pushes (two pushing
one Bitrix store's documents moved its amounts twice). A worker that finds the lease taken stops:
LeaseLost. Its position save is fenced by the lease too (`keep` inside the save's transaction).
A worker that stops for good (its process frozen, killed) renews nothing, and after LEASE_S the
lease is free for another."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from adapters.db import transaction
from ledger.clock import utc_now, utc_text
from ledger.sql import SqlTx

log = logging.getLogger("adapters.outbound")

LEASE_S = 60.0
# While a push runs, the keeper renews the lease after this share of LEASE_S: three renewals may
# fail in a row (the database away for a moment) before the lease runs out.
RENEW_EVERY_SHARE = 0.25
# How long the end of a push waits for a keeper still inside a renewal (a database that is slow
# to answer); past it the keeper is left to finish on its own, and renews nothing more.
KEEPER_STOP_WAIT_S = 10.0


class LeaseLost(Exception):
    """Another worker holds the target's lease now (this one's ran out while it waited): the cycle
    stops, pushes nothing more and saves nothing; the other worker pushes from the saved position."""


class TargetLease:
    def __init__(self, recorder: Any, adapter: str, owner: str) -> None:
        self.recorder = recorder
        self.adapter = adapter
        self.owner = owner

    def take(self) -> bool:
        """Takes the lease if it is free, run out, or this worker's already; whether it is now."""
        now = utc_now()
        until = utc_text(now + timedelta(seconds=LEASE_S))
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_positions SET lease_owner = %s, lease_until = %s WHERE adapter = %s "
                "AND (lease_owner IS NULL OR lease_owner = %s OR lease_until < %s)",
                (self.owner, until, self.adapter, self.owner, utc_text(now)),
            )
            return self._holder(tx) == self.owner

    def keep(self, tx: SqlTx | None = None) -> None:
        """Renews the lease for LEASE_S more (in `tx` when given); LeaseLost if another holds it."""
        if tx is None:
            with transaction(self.recorder) as own:
                self.keep(own)
            return
        until = utc_text(utc_now() + timedelta(seconds=LEASE_S))
        tx.execute(
            "UPDATE adapter_positions SET lease_until = %s WHERE adapter = %s AND lease_owner = %s",
            (until, self.adapter, self.owner),
        )
        holder = self._holder(tx)
        if holder != self.owner:
            raise LeaseLost(f"{self.adapter}: the lease is {holder}'s now; this cycle stops")

    def release(self) -> None:
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_positions SET lease_owner = NULL, lease_until = NULL "
                "WHERE adapter = %s AND lease_owner = %s",
                (self.adapter, self.owner),
            )

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Renews the lease now (LeaseLost if it is taken) and, while the block runs, every
        RENEW_EVERY_SHARE of LEASE_S. A renewal that finds it taken stops renewing; the next
        `keep` (the next batch's, or the save's, which is fenced by it) raises LeaseLost."""
        self.keep()
        stopped = threading.Event()
        keeper = threading.Thread(
            target=self._renew_until, args=(stopped,), name=f"lease-{self.adapter}", daemon=True
        )
        keeper.start()
        try:
            yield
        finally:
            stopped.set()
            keeper.join(KEEPER_STOP_WAIT_S)

    def _renew_until(self, stopped: threading.Event) -> None:
        while not stopped.wait(LEASE_S * RENEW_EVERY_SHARE):
            try:
                self.keep()
            except LeaseLost as error:
                log.warning("%s", error)
                return
            except Exception as error:  # noqa: BLE001 - the database away a moment: the next turn tries again
                log.warning("%s: renewing the lease failed: %r", self.adapter, error)

    def _holder(self, tx: SqlTx) -> str | None:
        row = tx.fetchone("SELECT lease_owner FROM adapter_positions WHERE adapter = %s", (self.adapter,))
        return None if row is None else row["lease_owner"]
