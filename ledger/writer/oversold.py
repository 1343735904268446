"""Lines recorded past what their store held, made known as they happen. A shipment, a sale or a
till's sale beyond the available units is recorded all the same, flagged `oversold` in the
history (the goods left; the ledger does not refuse what already happened). Found only by a
reader of the history, the on-call person would hear of it from a customer whose order was then
short. The writer counts each such line (`ledger_oversold_lines_total`) and logs it at
WARNING with what to read next, at most OVERSOLD_LINES_LOGGED_PER_WINDOW lines a window, so that a
till sending sales for stock never received cannot flood the log; the lines left out are counted
in the next window's first line and in the metric."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from ledger.domain.model import Entry

log = logging.getLogger("ledger.writer")

OVERSOLD_LOG_WINDOW_S = 60.0
OVERSOLD_LINES_LOGGED_PER_WINDOW = 20


class OversoldWatch:
    """The writer's count of oversold lines, and their log lines; used from the writer's thread only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.lines = 0  # every oversold line this writer recorded
        self._clock = clock
        self._window_started = clock()
        self._logged = 0
        self._left_out = 0

    def note(self, entries: Iterable[Entry]) -> None:
        """After a commit: the batch's entries (few lines are oversold; the scan is all it costs)."""
        for entry in entries:
            for effect in entry.effects:
                if effect.oversold:
                    self.lines += 1
                    self._say(entry, effect.sku, effect.qty_units)

    def _say(self, entry: Entry, sku: str, qty_units: int) -> None:
        now = self._clock()
        if now - self._window_started >= OVERSOLD_LOG_WINDOW_S:
            if self._left_out:
                log.warning(
                    "%d more oversold lines were recorded in the last %.0f s and not logged "
                    "(ledger_oversold_lines_total counts every one)",
                    self._left_out,
                    OVERSOLD_LOG_WINDOW_S,
                )
            self._window_started, self._logged, self._left_out = now, 0, 0
        if self._logged >= OVERSOLD_LINES_LOGGED_PER_WINDOW:
            self._left_out += 1
            return
        self._logged += 1
        event = entry.event
        log.warning(
            "oversold: %s of %s left store %s past what it held (%s %s from %s); its reservations and "
            "the units short: GET /v1/stores/%s/stock/%s/explain",
            qty_units,
            sku,
            event.store_id,
            event.type.value,
            event.event_id,
            event.source,
            event.store_id,
            sku,
        )
