"""PostgreSQL: the rebuild's fill spread over processes, by store.

The fill is bound by the replay's Python work (decoding each entry, applying it, making its rows),
which one interpreter runs on one core. The rules change a store's levels, reservations and
policies by that store's entries only, so the stores can be replayed apart: `split_stores` deals
them out to `rebuild_processes` parts by how many entries each has (the largest first, each to the
part with the fewest so far). The rebuild's own process replays every store but the other parts'
(a store that appears after the split is its), and each other part runs in a process of its own
(`fill_part`): a fresh interpreter (spawned, so it inherits no thread or connection of the
rebuild's), with connections of its own, that fills the shadow tables with its stores' rows and
then sends its replay's state back. The rebuild's process joins those states to its own
(`Replay.join`) while the indexes are built, and catches up and swaps with every store.

What a part's process says, on its pipe: ("progress", position) at most every
`PROGRESS_EVERY_S` while it works, ("filled", position) once its rows are committed, then
("state", state), or ("failed", why). A process that fails fails the rebuild, with its reason;
one that says nothing for `SILENCE_MAX_S`, or ends without a word, is taken as lost: the rebuild
fails (the live tables untouched) and the processes still running are stopped. A part's process
ignores Ctrl-C (the rebuild's process stops it) and dies with the rebuild's process (Linux: the
kernel kills it; elsewhere it stops after the page it is on): a rebuild started again would
otherwise share the shadow tables with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from ledger.cli_errors import CommandError
from ledger.domain.rules import LedgerState
from ledger.rebuild.fill import fill
from ledger.rebuild.limits import RebuildLimits
from ledger.rebuild.replay import Replay, Stores, collection_paused
from ledger.storage.recorders import EVENTS_TABLE, PostgresLedgerRecorder

OpenRecorder = Callable[[], PostgresLedgerRecorder]  # picklable: the other processes call it

PROGRESS_EVERY_S = 1.0
# Longer than a page's replay and insert take on any database that still works (a page is
# `rebuild_batch_entries` entries), than one statement of the levels and reservations written at
# the end, and than sending a replay's state.
SILENCE_MAX_S = 600.0
STOP_WAIT_S = 10.0  # for a process told to stop (SIGTERM) to end
LISTEN_STEP_S = 1.0  # waiting on several processes: how often the silence of each is judged
_PR_SET_PDEATHSIG = 1  # prctl(2)


def split_stores(recorder: PostgresLedgerRecorder, processes: int) -> list[frozenset[str]]:
    """The stores in at most `processes` parts, by how many entries each has (its version, the
    number of its entries, read from the log's primary key)."""
    if processes <= 1:
        return []
    with recorder.read_transaction() as tx:
        rows = tx.fetchall(
            f"SELECT originator_id AS store_id, MAX(originator_version) AS entries FROM {EVENTS_TABLE} "
            "GROUP BY originator_id"
        )
    return split({str(row["store_id"]): int(row["entries"]) for row in rows}, processes)


def split(entries_by_store: Mapping[str, int], parts: int) -> list[frozenset[str]]:
    """The stores in at most `parts` parts of about as many entries each, the largest part first;
    no part is empty."""
    totals = [0] * parts
    named: list[set[str]] = [set() for _ in range(parts)]
    for store_id, entries in sorted(entries_by_store.items(), key=lambda item: (-item[1], item[0])):
        smallest = totals.index(min(totals))
        totals[smallest] += entries
        named[smallest].add(store_id)
    order = sorted(range(parts), key=lambda index: -totals[index])
    return [frozenset(named[index]) for index in order if named[index]]


def _die_with(rebuilding: int) -> None:
    """Linux: the kernel kills this process when the rebuild's ends. Checked after, in case it
    ended before."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != rebuilding:
        os._exit(1)


def fill_part(
    open_recorder: OpenRecorder,
    stores: frozenset[str],
    head: int,
    limits: RebuildLimits,
    pipe: Connection,
    rebuilding: int,
) -> None:
    """A part's process: its stores' rows into the shadow tables, then its replay's state.
    `rebuilding`: the rebuild's process id."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(rebuilding)
    try:
        replay = Replay(Stores(stores))
        said = time.monotonic()

        def progress(phase: str, position: int, head: int) -> None:
            nonlocal said
            if os.getppid() != rebuilding:  # where the kernel does not kill it
                raise RuntimeError("the rebuild's process has ended")
            if time.monotonic() - said >= PROGRESS_EVERY_S:
                pipe.send(("progress", position))
                said = time.monotonic()

        with collection_paused():
            recorder = open_recorder()
            try:
                fill(recorder, replay, head, limits, progress)
            finally:
                recorder.close()
            pipe.send(("filled", replay.position))
            pipe.send(("state", replay.state))
    except (BrokenPipeError, ConnectionError):
        pass  # the rebuild's process is gone: no one to tell
    except BaseException as error:  # noqa: BLE001 (told to the rebuild's process, which fails with it)
        with contextlib.suppress(OSError):
            pipe.send(("failed", f"{type(error).__name__}: {error}"))
    finally:
        pipe.close()


class _Part:
    def __init__(self, process: BaseProcess, pipe: Connection, stores: frozenset[str]) -> None:
        self.process = process
        self.pipe = pipe
        self.stores = stores
        self.heard = time.monotonic()
        self.said: dict[str, Any] = {}  # the last payload of each kind of message
        self.finished = False  # its last message (its state) is in: it ends, or has ended

    def name(self) -> str:
        stores = f"{len(self.stores)} store{'s' if len(self.stores) != 1 else ''}"
        return f"the rebuild's process for {stores} (pid {self.process.pid})"

    def listen(self, wait_s: float) -> bool:
        """Takes in one message if one comes within `wait_s`; raises if the process failed, ended
        or has been silent too long (its end after its state is no failure)."""
        if self.finished:
            return False
        silent = time.monotonic() - self.heard
        if not self.pipe.poll(max(0.0, min(wait_s, SILENCE_MAX_S - silent))):  # what it said first
            if time.monotonic() - self.heard >= SILENCE_MAX_S:
                raise _lost(f"{self.name()} said nothing for {SILENCE_MAX_S:.0f} s")
            return False
        try:
            kind, payload = self.pipe.recv()
        except EOFError:
            self.process.join(STOP_WAIT_S)
            raise _lost(f"{self.name()} ended without a word (exit code {self.process.exitcode})") from None
        self.heard = time.monotonic()
        if kind == "failed":
            raise _lost(f"{self.name()} failed: {payload}")
        if kind not in ("progress", "filled", "state"):
            raise RuntimeError(f"{self.name()} said {kind!r}")
        self.said[kind] = payload
        self.finished = kind == "state"
        return True

    def take(self, kind: str) -> Any:
        if kind not in self.said:
            raise RuntimeError(f"{self.name()} ended without saying {kind!r}")
        return self.said.pop(kind)


def _lost(what: str) -> CommandError:
    """A part's process killed, silent, or failed on the database: the operator's to put right (or
    retry), told in one line. What a process says that it should not is a bug, and stays one."""
    return CommandError(f"{what}; the live tables are unchanged: run the rebuild again")


class OtherParts:
    """The processes of the other parts, from `__enter__` to `__exit__` (which stops any still
    running)."""

    def __init__(
        self,
        open_recorder: OpenRecorder | None,
        parts: list[frozenset[str]],
        head: int,
        limits: RebuildLimits,
    ) -> None:
        if parts and open_recorder is None:
            raise ValueError("other processes need a way to the database")
        self._open_recorder = open_recorder
        self._parts = parts
        self._head = head
        self._limits = limits
        self._running: list[_Part] = []

    def stores(self) -> frozenset[str]:
        return frozenset().union(*self._parts)

    def __enter__(self) -> OtherParts:
        context = multiprocessing.get_context("spawn")
        try:
            for stores in self._parts:
                ours, theirs = context.Pipe(duplex=False)
                process = context.Process(
                    target=fill_part,
                    args=(self._open_recorder, stores, self._head, self._limits, theirs, os.getpid()),
                    name="ledger-rebuild-part",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self._running.append(_Part(process, ours, stores))
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)  # those started are stopped
            raise
        return self

    def check(self) -> None:
        """Raises if a process failed or went silent (between the rebuild's own pages)."""
        for part in self._running:
            while part.listen(0.0):
                pass

    def _until_all_said(self, kind: str) -> None:
        """Listens to every process at once (none waits on a full pipe while another is waited
        for) until each has said `kind`."""
        while waiting := [part for part in self._running if kind not in part.said]:
            for part in waiting:
                if part.finished:
                    part.take(kind)  # raises: it said its last without it
                while part.listen(0.0):
                    pass
            pipes = [part.pipe for part in waiting if kind not in part.said]
            if pipes:
                multiprocessing.connection.wait(pipes, LISTEN_STEP_S)

    def wait_filled(self) -> None:
        self._until_all_said("filled")
        for part in self._running:
            position = part.take("filled")
            if position != self._head:
                raise RuntimeError(f"{part.name()} filled up to {position}, not {self._head}")

    def states(self) -> Iterator[LedgerState]:
        self._until_all_said("state")
        for part in self._running:
            state = part.take("state")
            if not isinstance(state, LedgerState):
                raise RuntimeError(f"{part.name()} sent a {type(state).__name__} for its state")
            yield state

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        for part in self._running:
            if kind is None:
                part.process.join(STOP_WAIT_S)
            if part.process.is_alive():
                part.process.terminate()
                part.process.join(STOP_WAIT_S)
            part.pipe.close()
