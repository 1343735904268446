"""`ledger consume` that kills itself with SIGKILL, or sends itself SIGTERM, at a chosen point of a
chosen batch: how the crash tests reach exact moments with a real process kill.

LEDGER_TEST_CRASH_POINT:
- while_recording: SIGKILL shortly after the batch went to the writer, before it answers
- after_recording: SIGKILL once the batch is durable, before its results are published
- after_publishing: SIGKILL once the results are acknowledged, before the offsets are committed
- term_while_recording: SIGTERM to itself while the batch is being recorded (then carries on)
LEDGER_TEST_CRASH_BATCH: which batch (1 = the first with events).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from ledger.cli import main
from ledger.kafka.consumer import KafkaIntake

POINT = os.environ["LEDGER_TEST_CRASH_POINT"]
BATCH = int(os.environ.get("LEDGER_TEST_CRASH_BATCH", "1"))
WHILE_RECORDING_DELAY_S = 0.02

original_process = KafkaIntake.process
original_publish = KafkaIntake.publish
original_commit = KafkaIntake.commit
progress = {"batches": 0}  # batches with events seen so far


def say(what: str) -> None:
    print(f"CRASH-TEST {what} (batch {progress['batches']})", flush=True)
    sys.stdout.flush()


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def process(self: KafkaIntake, consumer: Any, producer: Any, batch: Any) -> bool:
    if batch.events:
        progress["batches"] += 1
    if progress["batches"] != BATCH or not batch.events:
        return original_process(self, consumer, producer, batch)
    if POINT == "while_recording":
        say("SIGKILL while recording")
        threading.Timer(WHILE_RECORDING_DELAY_S, kill_self).start()
    elif POINT == "term_while_recording":
        say("SIGTERM while recording")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(WHILE_RECORDING_DELAY_S)
    return original_process(self, consumer, producer, batch)


def publish(self: KafkaIntake, producer: Any, batch: Any, results: Any) -> None:
    if POINT == "after_recording" and progress["batches"] == BATCH and batch.events:
        say("SIGKILL after recording")
        kill_self()
    original_publish(self, producer, batch, results)


def commit(self: KafkaIntake, consumer: Any, batch: Any) -> None:
    if POINT == "after_publishing" and progress["batches"] == BATCH and batch.events:
        say("SIGKILL after publishing")
        kill_self()
    original_commit(self, consumer, batch)


KafkaIntake.process = process  # type: ignore[method-assign]
KafkaIntake.publish = publish  # type: ignore[method-assign]
KafkaIntake.commit = commit  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["consume"]))
