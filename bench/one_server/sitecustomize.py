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
- `telemetry`: off, the request telemetry layer (ledger/api/telemetry.py) is the same pass-through
  as telemetry_bench.py's separate off side's (bench/telemetry_off/), with the server's one log
  format; on, as started.

SIGUSR1 turns it off, SIGUSR2 on. Only the process that builds the application listens for them
(the writer process, which runs this file too, keeps SIGUSR1 as its own stop signal): it writes its
pid to the file `LEDGER_BENCH_SWITCH_PID_FILE` (the one to signal; a second such process, as with
`--workers 2`, fails its start) and, after each switch, the state to the file
`LEDGER_BENCH_SWITCH_STATE_FILE`, which the bench waits for before measuring.
"""

from __future__ import annotations

import os
import signal
from typing import Any

_WHAT = os.environ.get("LEDGER_BENCH_SWITCH")
_ON = {"on": True}  # read by the token book on every request: a dict, so the handler can set it
_LAYERS: list[Any] = []  # the application's outermost layer, whose class the telemetry switch swaps


def _install() -> None:
    from ledger.access import book
    from ledger.api import app, telemetry

    if _WHAT == "token":
        # The gate reads it on every request, so both states pay the same property call.
        def tokens_exist(self: Any) -> bool:
            return bool(self.__dict__.get("_bench_any_tokens")) and _ON["on"]

        def note_tokens(self: Any, value: bool) -> None:  # the refresher's writes, every second
            self.__dict__["_bench_any_tokens"] = value

        book.TokenBook.any_tokens = property(tokens_exist, note_tokens)  # type: ignore[assignment,method-assign]

    class PassThrough(telemetry.RequestTelemetry):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    create_asgi = app.create_asgi

    def switch(signum: int, _frame: Any) -> None:
        _ON["on"] = signum == signal.SIGUSR2
        if _WHAT == "telemetry":
            for layer in _LAYERS:  # same attributes: only the class's __call__ changes
                layer.__class__ = telemetry.RequestTelemetry if _ON["on"] else PassThrough
        with open(os.environ["LEDGER_BENCH_SWITCH_STATE_FILE"], "w") as file:
            file.write("on" if _ON["on"] else "off")

    def create(*args: Any, **kwargs: Any) -> Any:
        outermost = create_asgi(*args, **kwargs)
        _LAYERS.append(outermost)
        with open(os.environ["LEDGER_BENCH_SWITCH_PID_FILE"], "x") as file:  # "x": one such process
            file.write(str(os.getpid()))
        signal.signal(signal.SIGUSR1, switch)
        signal.signal(signal.SIGUSR2, switch)
        return outermost

    app.create_asgi = create  # type: ignore[assignment]


if _WHAT in ("token", "telemetry"):
    _install()
