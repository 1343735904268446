"""Where a GET's HTTP CPU goes, open and with a token: the served stack driven in this process.

Usage: python bench/http_stack_bench.py                  # instructions per request, under callgrind
       python bench/http_stack_bench.py --timed          # CPU µs per request, alternating blocks

No sockets, no wrk: one embedded ledger (SQLite in a temporary directory), its ASGI stack as `ledger
serve` builds it (create_asgi, wrapped by uvicorn's Config as uvicorn wraps it), and uvicorn's
protocol as the API configures it (ledger/api/connections.py), fed the request bytes wrk sends
through a transport that only keeps what is written. One request at a time: feed the bytes, run the
event loop until the response's last byte is written. What is left is the stack's own CPU per
request, without the kernel's and wrk's, which on this 2-core machine drift more than the few µs a
token costs (token_bench.py measures the whole).

Variants:
  open          the open ledger (no token exists), the request wrk sends open: Host only;
  open+header   the same ledger, the request with the Authorization header too (what one more
                header costs the HTTP stack alone);
  token         a ledger with an admin token, the request with it (token_bench.py's closed side);
  bare          the open ledger with its outermost layer (request ids, HTTP metrics:
                ledger/api/telemetry.py) replaced by a pass-through, as telemetry_bench.py's off
                side runs it: what that layer costs the stack.

By default the script runs itself under valgrind's callgrind and counts the machine instructions of
the event loop's thread per request of each variant (the cyclic garbage collector held off while
counting, so that a collection does not fall on one variant by chance): a count that does not
drift with the machine's load, unlike any time, so a change of a few hundred instructions shows.
With --timed it measures CPU µs per request instead, in alternating blocks (the best of each kept).
Writes bench/http_stack_results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frame import READ_SKU, STORE, receipt

PORT = 8000  # only written into the Host header, as wrk writes it


class KeptTransport(asyncio.Transport):
    """Keeps what the protocol writes; `answered` is set once a whole response was written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False
        self.answered: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", PORT), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        # The fast path's answers come in one write of the head and one of the body (or one of both).
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def request_bytes(token: str | None) -> bytes:
    """What bench/ledger.lua sends for a GET: wrk.format adds the Host header."""
    head = f"GET /v1/stores/{STORE}/stock/{READ_SKU} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + "\r\n").encode()


class Served:
    """One ledger with its ASGI stack and uvicorn's protocol, on the running loop."""

    def __init__(self, directory: Path, *, with_token: bool, with_telemetry: bool = True) -> None:
        self.directory = directory
        self.with_token = with_token
        self.with_telemetry = with_telemetry
        self.token: str | None = None

    async def start(self) -> None:
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        from ledger.api.app import create_asgi
        from ledger.api.connections import uvicorn_options
        from ledger.bootstrap import build_ledger, intake_limits
        from ledger.config import Settings

        url = f"sqlite:///{self.directory / 'ledger.db'}"
        os.environ["LEDGER_DATABASE_URL"] = url
        settings = Settings()
        if self.with_token:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from support.access import new_token

            self.token = new_token(url, "bench", "admin")
        self.ledger = build_ledger(settings)
        options = uvicorn_options(settings)
        self.protocol_factory = options.pop("http")
        self.config = Config(
            self._asgi(create_asgi, settings, intake_limits(settings)),
            access_log=False,  # as `ledger serve` runs it
            log_config=None,
            **options,
        )
        self.config.load()
        self.server_state = ServerState()
        self.app = self.config.loaded_app
        self.lifespan_messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lifespan_sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lifespan = asyncio.create_task(
            self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                self.lifespan_messages.get,
                self._lifespan_send,
            )
        )
        await self.lifespan_messages.put({"type": "lifespan.startup"})
        started = await self.lifespan_sent.get()
        assert started["type"] == "lifespan.startup.complete", started
        self.reconnect()
        self.get = request_bytes(self.token)
        self.get_with_header = request_bytes(self.token or "sl_live_" + "x" * 43)

    def reconnect(self) -> None:
        """A new connection: one left unused past the server's idle timeout (5 s; under callgrind
        while the other ledgers start) is closed, and a request on it would wait for ever."""
        if getattr(self, "protocol", None) is not None:
            self.protocol.connection_lost(None)
        self.transport = KeptTransport()
        self.protocol = self.protocol_factory(self.config, self.server_state, {}, asyncio.get_event_loop())
        self.protocol.connection_made(self.transport)

    def _asgi(self, create_asgi: Any, settings: Any, limits: Any) -> Any:
        if self.with_telemetry:
            return create_asgi(self.ledger, settings, limits)
        import ledger.api.app

        sys.path.insert(0, str(Path(__file__).resolve().parent / "telemetry_off"))
        from sitecustomize import _PassThrough  # type: ignore[import-not-found]

        layer = ledger.api.app.RequestTelemetry
        ledger.api.app.RequestTelemetry = _PassThrough  # type: ignore[assignment,misc]
        try:
            return create_asgi(self.ledger, settings, limits)
        finally:
            ledger.api.app.RequestTelemetry = layer  # type: ignore[misc]

    async def _lifespan_send(self, message: dict[str, Any]) -> None:
        await self.lifespan_sent.put(message)

    async def stop(self) -> None:
        self.protocol.connection_lost(None)
        await self.lifespan_messages.put({"type": "lifespan.shutdown"})
        await self.lifespan_sent.get()
        await self.lifespan

    async def one(self, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        self.transport.written.clear()
        answered = self.transport.answered = loop.create_future()
        self.protocol.data_received(data)
        await answered
        # The body's write follows the head's in the same task: let it run to the end of the response.
        while self.protocol.cycle is not None and not self.protocol.cycle.response_complete:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return b"".join(self.transport.written)

    async def seed(self) -> None:
        body = json.dumps([receipt("seed-1", [(READ_SKU, 1000)])]).encode()
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
            f"Content-Type: application/cloudevents-batch+json\r\nContent-Length: {len(body)}\r\n"
        )
        if self.token:
            head += f"Authorization: Bearer {self.token}\r\n"
        answer = await self.one(head.encode() + b"\r\n" + body)
        assert b" 20" in answer.split(b"\r\n", 1)[0], answer[:300]
        deadline = time.monotonic() + 10
        while b"200 OK" not in (answer := await self.one(self.get)):
            assert time.monotonic() < deadline, answer[:300]
            await asyncio.sleep(0.05)


def timed(served: Served, data: bytes, requests: int) -> Any:
    async def run() -> float:
        started = time.process_time()
        for _ in range(requests):
            await served.one(data)
        return (time.process_time() - started) * 1e6 / requests

    return run()


VARIANTS = ("open", "open+header", "token", "bare")
RESULTS = "http_stack_results.json"


def counted_under_callgrind(args: argparse.Namespace) -> dict[str, Any]:
    """Runs this script under callgrind (--counting), and reads the event loop thread's instructions
    of each variant's dumps."""
    with tempfile.TemporaryDirectory(prefix="ledger-http-stack-cg-") as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--counting",
            f"--requests={args.requests}",
            f"--blocks={args.blocks}",
        ]
        finished = subprocess.run(argv, capture_output=True, text=True, check=False)
        if finished.returncode != 0:
            raise SystemExit(f"callgrind run failed ({finished.returncode}): {finished.stderr[-2000:]}")
        counts: dict[str, list[int]] = {name: [] for name in VARIANTS}
        for dump in sorted(Path(tmp).glob("callgrind.out.*-01")):  # thread 1: the event loop's
            text = dump.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: dump (\S+)-\d+$", text, re.MULTILINE)
            summary = re.search(r"^summary: (\d+)$", text, re.MULTILINE)
            if trigger and summary and trigger.group(1) in counts:
                counts[trigger.group(1)].append(round(int(summary.group(1)) / args.requests))
    best = {name: min(values) for name, values in counts.items()}
    return {
        "instructions_per_request": counts,
        "best": best,
        "one_more_header": best["open+header"] - best["open"],
        "token_past_its_header": best["token"] - best["open+header"],
        "token": best["token"] - best["open"],
        "token_share": round((best["token"] - best["open"]) / best["open"], 4),
        "telemetry_layer": best["open"] - best["bare"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, help="requests per block (default 1000; --timed: 20000)")
    parser.add_argument("--blocks", type=int, help="blocks of each variant (default 2; --timed: 7)")
    parser.add_argument("--timed", action="store_true", help="CPU µs per request instead of instructions")
    parser.add_argument("--counting", action="store_true", help=argparse.SUPPRESS)  # under callgrind
    parser.add_argument("--output", default=str(Path(__file__).resolve().with_name(RESULTS)))
    args = parser.parse_args(argv)
    args.requests = args.requests or (20_000 if args.timed else 1000)
    args.blocks = args.blocks or (7 if args.timed else 2)
    if not (args.timed or args.counting):
        results = {"settings": vars(args), "callgrind": counted_under_callgrind(args)}
        print(json.dumps(results["callgrind"], indent=1))
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        return 0

    from ledger.bootstrap import tune_gc

    tune_gc()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory(prefix="ledger-http-stack-") as tmp:
        open_ledger = Served(Path(tmp) / "open", with_token=False)
        closed_ledger = Served(Path(tmp) / "token", with_token=True)
        bare_ledger = Served(Path(tmp) / "bare", with_token=False, with_telemetry=False)
        for served in (open_ledger, closed_ledger, bare_ledger):
            served.directory.mkdir()
            loop.run_until_complete(served.start())
            loop.run_until_complete(served.seed())
        variants: dict[str, tuple[Served, bytes]] = {
            "open": (open_ledger, open_ledger.get),
            "open+header": (open_ledger, open_ledger.get_with_header),
            "token": (closed_ledger, closed_ledger.get),
            "bare": (bare_ledger, bare_ledger.get),
        }
        for served, data in variants.values():  # the answers are those the bench counts
            answer = loop.run_until_complete(served.one(data))
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
            loop.run_until_complete(timed(served, data, 200 if args.counting else 2000))  # warm
        if args.counting:
            control = ["callgrind_control"]
            for block in range(args.blocks):
                for name, (served, data) in variants.items():
                    served.reconnect()
                    loop.run_until_complete(timed(served, data, 20))
                    gc.collect()
                    gc.disable()
                    subprocess.run([*control, "--zero", str(os.getpid())], check=True, capture_output=True)
                    loop.run_until_complete(timed(served, data, args.requests))
                    subprocess.run(
                        [*control, f"--dump={name}-{block}", str(os.getpid())],
                        check=True,
                        capture_output=True,
                    )
                    gc.enable()
        else:
            blocks: dict[str, list[float]] = {name: [] for name in variants}
            for block in range(args.blocks):
                for name in list(variants) if block % 2 == 0 else list(reversed(variants)):
                    served, data = variants[name]
                    served.reconnect()
                    loop.run_until_complete(timed(served, data, 20))
                    blocks[name].append(loop.run_until_complete(timed(served, data, args.requests)))
            best = {name: round(min(values), 2) for name, values in blocks.items()}
            results = {
                "cpu_us_per_request": {k: [round(v, 2) for v in vs] for k, vs in blocks.items()},
                "best": best,
                "one_more_header_us": round(best["open+header"] - best["open"], 2),
                "token_us": round(best["token"] - best["open"], 2),
                "telemetry_layer_us": round(best["open"] - best["bare"], 2),
                "load_average": os.getloadavg(),
            }
            print(json.dumps(results, indent=1))
        for served in (open_ledger, closed_ledger, bare_ledger):
            loop.run_until_complete(served.stop())
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
