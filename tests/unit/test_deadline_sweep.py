"""The read deadlines of a worker's connections (ledger/api/connections.py): one sweep closes those
whose deadline has passed, goes on while any has one still to come, and stops when none has; a
connection of another protocol, without deadlines, is passed over."""

from __future__ import annotations

import asyncio

import pytest

from ledger.api import connections


class _Connection:
    def __init__(self, read_by: float) -> None:
        self.read_by = read_by
        self.cut = False

    def read_deadline_passed(self) -> None:
        self.read_by = 0.0
        self.cut = True


class _OtherProtocol:
    pass


def test_a_passed_deadline_is_cut_a_coming_one_waited_for_and_the_sweep_then_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "DEADLINE_SWEEP_S", 0.01)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late, coming, none = _Connection(now - 1), _Connection(now + 0.05), _Connection(0.0)
        sweep = connections._DeadlineSweep(loop, {late, coming, none, _OtherProtocol()})
        sweep.ensure()
        await asyncio.sleep(0.03)
        assert late.cut and not coming.cut and not none.cut
        assert sweep.next is not None, "stopped while a deadline was still to come"
        await asyncio.sleep(0.1)
        assert coming.cut and not none.cut
        assert sweep.next is None, "went on with no deadline left"

    asyncio.run(run())
