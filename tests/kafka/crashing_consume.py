"""`ledger consume` that kills itself with SIGKILL, or sends itself SIGTERM, at a chosen point of a
chosen batch: how the crash tests reach exact moments with a real process kill.

LEDGER_TEST_CRASH_POINT:
- while_recording: SIGKILL shortly after the batch went to the recording thread, before it answers
  (the batches before it may be publishing, the next one being read)
- after_recording: SIGKILL once the batch is durable, before its results are published
- after_publishing: SIGKILL once the results are acknowledged, before the offsets are committed
- term_while_recording: SIGTERM to itself as the batch is handed over (then carries on)
LEDGER_TEST_CRASH_BATCH: which batch (1 = the first with events).
With LEDGER_TEST_WRITER_PROCESS=1 the writer runs in a process of its own (consume_beside_writer.py),
and a SIGKILL takes the process group, the writer with it, as a kill -9 of `ledger serve` does.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from consume_beside_writer import consume, writer_beside

from ledger.kafka.consumer import KafkaIntake

POINT = os.environ["LEDGER_TEST_CRASH_POINT"]
BATCH = int(os.environ.get("LEDGER_TEST_CRASH_BATCH", "1"))
WHILE_RECORDING_DELAY_S = 0.02

original_hand_off = KafkaIntake.hand_off
original_publish = KafkaIntake.publish
original_commit = KafkaIntake.commit
progress = {"batches": 0}  # batches with events handed to the recording thread so far
numbers: dict[int, int] = {}  # InFlight.sequence -> which batch with events it is


def say(what: str) -> None:
    print(f"CRASH-TEST {what} (batch {progress['batches']})", flush=True)
    sys.stdout.flush()


def kill_self() -> None:
    if writer_beside():  # the harness started this process in a group of its own, with its writer
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def chosen(flight: Any) -> bool:
    return numbers.get(flight.sequence) == BATCH


def hand_off(self: KafkaIntake, batch: Any) -> Any:
    if not batch.events:
        return original_hand_off(self, batch)
    progress["batches"] += 1
    flight = original_hand_off(self, batch)
    numbers[flight.sequence] = progress["batches"]
    if progress["batches"] == BATCH:
        if POINT == "while_recording":
            say("SIGKILL while recording")
            threading.Timer(WHILE_RECORDING_DELAY_S, kill_self).start()
        elif POINT == "term_while_recording":
            say("SIGTERM while recording")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(WHILE_RECORDING_DELAY_S)
    return flight


def publish(self: KafkaIntake, flight: Any, deadline_s: float | None = None) -> None:
    if POINT == "after_recording" and chosen(flight):
        say("SIGKILL after recording")
        kill_self()
    original_publish(self, flight, deadline_s)


def commit(self: KafkaIntake, consumer: Any, flights: Any, *, wait: bool = True) -> None:
    if POINT == "after_publishing" and any(chosen(flight) for flight in flights):
        say("SIGKILL after publishing")
        kill_self()
    original_commit(self, consumer, flights, wait=wait)


KafkaIntake.hand_off = hand_off  # type: ignore[method-assign]
KafkaIntake.publish = publish  # type: ignore[method-assign]
KafkaIntake.commit = commit  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(consume())
