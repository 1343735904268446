"""The Kafka client libraries' repeated lines, folded: while a broker is away, kafka-python logs
four lines for every try to reach it and librdkafka one for every try of every producer built to
reach it, hundreds a minute, all saying the same thing. The first line of each kind is logged;
the same kind again within `REPEAT_WINDOW_S` is counted, not logged, and the next one logged after
the window says how many were left out. A kind is the logger, the level and the message with its
numbers taken out (ports, backoffs, client ids numbered by librdkafka). The ledger's own lines are
never folded: each one says something of its own."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

REPEAT_WINDOW_S = 60.0
# The kinds remembered at once; the longest unseen is forgotten first (and logged again if it comes).
REPEAT_KINDS_MAX = 256
FOLDED_LOGGERS = "kafka"

_NUMBERS = re.compile(r"\d+")


class _Seen:
    __slots__ = ("left_out", "logged_s")

    def __init__(self, logged_s: float) -> None:
        self.logged_s = logged_s
        self.left_out = 0


class RepeatsFolded(logging.Filter):
    """A handler's filter: lets a kind's first line of each window through, with the count of those
    left out since the last one it let through."""

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        kinds_max: int = REPEAT_KINDS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._window_s = window_s
        self._kinds_max = kinds_max
        self._clock = clock
        self._seen: OrderedDict[tuple[str, int, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name != FOLDED_LOGGERS and not name.startswith(FOLDED_LOGGERS + "."):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a line that cannot be formatted is the handler's to report
            return True
        kind = (name, record.levelno, _NUMBERS.sub("#", message))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen.logged_s < self._window_s:
                seen.left_out += 1
                self._seen.move_to_end(kind)
                return False
            left_out, since_s = (0, 0.0) if seen is None else (seen.left_out, now - seen.logged_s)
            self._seen[kind] = _Seen(now)
            self._seen.move_to_end(kind)
            while len(self._seen) > self._kinds_max:
                self._seen.popitem(last=False)
        if left_out:
            record.msg = f"{message} ({left_out} more like it in the {since_s:.0f} s before, not logged)"
            record.args = None
        return True
