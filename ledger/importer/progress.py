"""How far an import is, told on stderr: a bar on a terminal, else a line every so often.

A bar redrawn in a log file or a CI log is noise, so when stderr is not a terminal the same
figures come as one plain line every `interval_s`. Messages about single lines (an invalid one)
go through `say`, so that they do not break the bar.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    def __init__(self, total_bytes: int | None, interval_s: float, *, quiet: bool, stream: TextIO) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.quiet = quiet
        self.total_bytes = total_bytes
        self._lock = threading.Lock()  # the reading thread and the recording thread both report
        self._started = time.monotonic()
        self._last_line_at = self._started
        self._bar: tqdm | None = None
        if not quiet and stream.isatty():
            size = shutil.get_terminal_size()
            # A terminal that reports no size (some ptys) would get no bar at all: 80x24 then.
            self._bar = tqdm(
                total=total_bytes,
                unit="B",
                unit_scale=True,
                desc="importing",
                file=stream,
                leave=True,
                ncols=size.columns,
                nrows=size.lines,
            )

    def update(self, bytes_read: int, line_no: int, recorded: int) -> None:
        """The file read up to `bytes_read` (line `line_no`); `recorded` events have an outcome."""
        with self._lock:
            if self._bar is not None:
                self._bar.n = bytes_read
                self._bar.set_postfix_str(f"{recorded:,} events", refresh=False)
                self._bar.refresh()
                return
            now = time.monotonic()
            if self.quiet or now - self._last_line_at < self.interval_s:
                return
            self._last_line_at = now
            rate = recorded / max(now - self._started, 1e-9)
            share = f", {100 * bytes_read / self.total_bytes:.0f}% of the file" if self.total_bytes else ""
            print(
                f"import: line {line_no:,}{share}, {recorded:,} recorded, {rate:,.0f} events/s",
                file=self.stream,
                flush=True,
            )

    def say(self, message: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.write(message, file=self.stream)
            else:
                print(message, file=self.stream, flush=True)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def stderr_progress(total_bytes: int | None, interval_s: float, *, quiet: bool) -> Progress:
    return Progress(total_bytes, interval_s, quiet=quiet, stream=sys.stderr)
