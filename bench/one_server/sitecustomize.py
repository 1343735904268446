"""The switch of alternation.py's `--one-server`: one `ledger serve` whose HTTP process measures both
sides of a comparison in turn, so that nothing but the compared layer differs between them (not the
process, its memory layout, its hash seed or the moment it started: two servers started alike
differ by up to ~15% in CPU per GET, more than the few percent sought; bench/README.md).

Python imports `sitecustomize` at start from the first directory on its path that has one; the
bench puts this directory first on the server's PYTHONPATH only. Never on a production path.

`LEDGER_BENCH_SWITCH` names what is switched:
- `token`: the service is started closed (a token exists). Off, its token book reports that no token
  exists, so every request takes the gate's open path, as in a service where none was ever made
  (ledger/api/gate.py); on, as started.
- `telemetry`: off, the request telemetry layer (ledger/api/telemetry.py) is a pass-through, as
  telemetry_bench.py's separate off side has it (bench/telemetry_off/); on, as started.

SIGUSR1 turns it off, SIGUSR2 on. The process that built the application writes its pid to
`LEDGER_BENCH_SWITCH_PID` (the one to signal) and, after each switch, the state to
`LEDGER_BENCH_SWITCH_STATE`, which the bench waits for before measuring.
"""

from __future__ import annotations

import os
import signal
from typing import Any

_WHAT = os.environ.get("LEDGER_BENCH_SWITCH")
_ON = {"on": True}
_LAYERS: list[Any] = []


def _install() -> None:
    from ledger.access import book
    from ledger.api import app, telemetry

    # Read on every request by the gate, so both states pay the same property call.
    def tokens_exist(self: Any) -> bool:
        return bool(self.__dict__.get("_bench_any_tokens")) and (_WHAT != "token" or _ON["on"])

    def note_tokens(self: Any, value: bool) -> None:
        self.__dict__["_bench_any_tokens"] = value

    book.TokenBook.any_tokens = property(tokens_exist, note_tokens)  # type: ignore[assignment,method-assign]

    class PassThrough(telemetry.RequestTelemetry):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    create_asgi = app.create_asgi

    def create(*args: Any, **kwargs: Any) -> Any:
        outermost = create_asgi(*args, **kwargs)
        _LAYERS.append(outermost)
        path = os.environ.get("LEDGER_BENCH_SWITCH_PID")
        if path:
            with open(path, "w") as file:
                file.write(str(os.getpid()))
        return outermost

    app.create_asgi = create  # type: ignore[assignment]

    def switch(signum: int, _frame: Any) -> None:
        _ON["on"] = signum == signal.SIGUSR2
        if _WHAT == "telemetry":
            for layer in _LAYERS:  # same attributes: only the class's __call__ changes
                layer.__class__ = telemetry.RequestTelemetry if _ON["on"] else PassThrough
        path = os.environ.get("LEDGER_BENCH_SWITCH_STATE")
        if path:
            with open(path, "w") as file:
                file.write("on" if _ON["on"] else "off")

    signal.signal(signal.SIGUSR1, switch)
    signal.signal(signal.SIGUSR2, switch)


if _WHAT in ("token", "telemetry"):
    _install()
