"""The read cache's periodic refresh: a head that this instance's own writer announced (a batch in
flight) is waited for, not read back from the database; anything else is read after the grace."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from ledger.service import REFRESH_GRACE_S, Ledger
from ledger.state_cache import Commit, StateCache
from ledger.writer.remote import RemoteWriter
from ledger.writer.wire import Announced, encode

COMMIT_DELAY_S = 0.2  # well past the grace: without the announcement the refresh reads back


class _Recorder:
    """Only what Ledger.refresh asks of a recorder: a transaction and the log's head in it."""

    def __init__(self, head: int) -> None:
        self.log_head = head

    @contextlib.contextmanager
    def read_transaction(self, *, answer_wait_s: float | None = None) -> Iterator[object]:
        yield object()

    def head(self, tx: object) -> int:
        return self.log_head

    def close(self) -> None:
        pass


class _CountingCache(StateCache):
    def __init__(self) -> None:
        super().__init__(levels_max=100, reservations_max=100, catch_up_events_max=1000)
        self.read_back: list[int] = []

    def catch_up(self, tx: Any, log_head: int) -> None:
        self.read_back.append(log_head)
        with self.lock:
            self.head = max(self.head, log_head)


def _ledger(cache: StateCache, head: int) -> Ledger:
    return Ledger(
        _Recorder(head),  # type: ignore[arg-type]
        cache,
        writer=None,  # type: ignore[arg-type]
        refresh_interval_s=60.0,
        wait_for_position_s_max=1.0,
    )


def _commit_later(cache: StateCache, first: int, head: int) -> threading.Timer:
    timer = threading.Timer(COMMIT_DELAY_S, lambda: cache.install(Commit({}, {}, {}, first, head)))
    timer.start()
    return timer


def test_an_announced_batch_arrives_from_the_writer_and_is_not_read_back() -> None:
    cache = _CountingCache()
    cache.head, cache.announced = 10, 20
    timer = _commit_later(cache, 11, 20)
    _ledger(cache, head=20).refresh(grace_s=REFRESH_GRACE_S)
    timer.join()
    assert cache.read_back == []
    assert cache.head == 20


def test_a_head_past_what_was_announced_is_read_back_after_the_grace() -> None:
    cache = _CountingCache()
    cache.head, cache.announced = 10, 20
    started = time.monotonic()
    _ledger(cache, head=25).refresh(grace_s=REFRESH_GRACE_S)  # 21..25: another instance's
    assert cache.read_back == [25]
    assert time.monotonic() - started < COMMIT_DELAY_S


def test_a_gap_the_cache_noticed_ends_the_wait_for_an_announced_batch() -> None:
    cache = _CountingCache()
    cache.head, cache.announced = 10, 20
    threading.Timer(0.05, cache.wake.set).start()
    started = time.monotonic()
    _ledger(cache, head=20).refresh(grace_s=REFRESH_GRACE_S)
    assert cache.read_back == [20]
    assert time.monotonic() - started < COMMIT_DELAY_S


def test_the_writer_process_announcement_reaches_the_cache() -> None:
    cache = StateCache(levels_max=10, reservations_max=10, catch_up_events_max=10)
    remote = RemoteWriter("/nonexistent", cache, timeout_s=1.0)

    async def read(frames: bytes) -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(frames)
        reader.feed_eof()
        await remote._read_loop(reader)

    asyncio.run(read(encode(Announced(42)) + encode(Announced(30))))
    assert cache.announced == 42  # never moves back
