"""A warning that goes on is said at once, then at most every interval, and at once again when its
kind changes or the trouble ended (the availability feed's failures and refusals use it)."""

from __future__ import annotations

from ledger.telemetry.warning_gate import WarningGate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_same_kind_is_said_again_only_after_the_interval() -> None:
    clock = Clock()
    gate = WarningGate(60.0, clock)
    assert gate.due(TimeoutError)
    clock.now += 59.9
    assert not gate.due(TimeoutError)
    clock.now += 0.1
    assert gate.due(TimeoutError)
    assert not gate.due(TimeoutError)


def test_a_new_kind_is_said_at_once_and_starts_its_own_interval() -> None:
    clock = Clock()
    gate = WarningGate(60.0, clock)
    assert gate.due(TimeoutError)
    clock.now += 1
    assert gate.due(ConnectionError)
    clock.now += 30
    assert not gate.due(ConnectionError)
    assert gate.due(TimeoutError)  # the kind changed back


def test_after_a_reset_the_next_warning_is_said_at_once() -> None:
    clock = Clock()
    gate = WarningGate(60.0, clock)
    assert gate.due(TimeoutError)
    gate.reset()
    clock.now += 1
    assert gate.due(TimeoutError)
