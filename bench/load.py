"""Load generators: wrk with bench/ledger.lua, an asyncio HTTP/1.1 keep-alive fallback, and batch senders."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plumbing import BenchError, auth_headers

LUA_SCRIPT = Path(__file__).with_name("ledger.lua")
WRK_TOKEN_VARIABLE = "BENCH_LEDGER_TOKEN"  # ledger.lua reads the token from here (not from wrk's argv)
RESPONSE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def loads(raw: bytes) -> Any:
        return orjson.loads(raw)
except ImportError:  # the ledger depends on orjson, but the benchmark does not have to

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    def loads(raw: bytes) -> Any:
        return json.loads(raw)


@dataclass
class HttpRun:
    """Answers counted by a load generator; `unanswered_max` bounds requests sent but not counted."""

    tool: str
    connections: int
    ok: int
    other: int
    socket_errors: int
    elapsed_s: float
    latency_ms: dict[str, float]
    unanswered_max: int
    first_other: str = ""

    @property
    def per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "connections": self.connections,
            "ok": self.ok,
            "other": self.other,
            "socket_errors": self.socket_errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "ok_per_s": round(self.per_s, 1),
            "latency_ms": self.latency_ms,
            "unanswered_max": self.unanswered_max,
            "first_other": self.first_other,
        }


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return "not installed"
    finished = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (
        (finished.stdout or finished.stderr).splitlines()[0].strip()
        if (finished.stdout or finished.stderr)
        else "unknown"
    )


def http_load(
    port: int,
    mode: str,
    store: str,
    sku: str,
    connections: int,
    duration_s: float,
    nonce: str,
    *,
    prefer_wrk: bool = True,
    wrk_threads: int = 2,
    token: str | None = None,
) -> HttpRun:
    """`mode` "reserve" (POST one-unit reservations, unique ids, 201 counted), "reserve-online" (the
    same under the channel `online`) or "get" (200 counted).
    With a `token`, every request carries `Authorization: Bearer <token>`."""
    path = wrk_path() if prefer_wrk else None
    if path is not None:
        return _run_wrk(path, port, mode, store, sku, connections, duration_s, nonce, wrk_threads, token)
    return asyncio.run(_python_load(port, mode, store, sku, connections, duration_s, nonce, token))


# --- wrk ----------------------------------------------------------------------------------------------------


def _run_wrk(
    path: str,
    port: int,
    mode: str,
    store: str,
    sku: str,
    connections: int,
    duration_s: float,
    nonce: str,
    threads: int,
    token: str | None = None,
) -> HttpRun:
    threads = max(1, min(threads, connections))
    argv = [
        path,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={int(RESPONSE_TIMEOUT_S)}s",
        "-s",
        str(LUA_SCRIPT),
        f"http://127.0.0.1:{port}",
        "--",
        mode,
        store,
        sku,
        nonce,
    ]
    try:
        finished = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
            start_new_session=True,
            check=False,
            env={k: v for k, v in os.environ.items() if k != WRK_TOKEN_VARIABLE}
            | ({WRK_TOKEN_VARIABLE: token} if token else {}),
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration_s + 60:.0f} s") from None
    line = next((x for x in finished.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if finished.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed ({finished.returncode}):\n{finished.stdout[-1500:]}\n{finished.stderr[-1500:]}"
        )
    report = json.loads(line.removeprefix("WRKJSON "))
    socket_errors = sum(report[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return HttpRun(
        tool="wrk",
        connections=connections,
        ok=report["ok"],
        other=report["other"],
        socket_errors=socket_errors,
        elapsed_s=report["duration_us"] / 1e6,
        latency_ms={
            name: round(report[f"{name}_us"] / 1000, 3) for name in ("mean", "p50", "p90", "p99", "max")
        },
        # wrk stops at its deadline with one request in flight per connection; those answers are not counted.
        unanswered_max=connections + report["timeouts"] + report["read_errors"] + report["write_errors"],
        first_other=report["first_other"],
    )


# --- the asyncio fallback -----------------------------------------------------------------------------------


@dataclass
class _Tally:
    ok: int = 0
    other: int = 0
    socket_errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    first_other: str = ""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        payload = bytes(body)
    else:
        payload = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, payload, headers.get("connection", "").lower() == "close"


async def _connection(port: int, make_request: Any, expected: int, deadline: float, tally: _Tally) -> None:
    """One keep-alive connection: a request, its answer, the next; the last answer is awaited, not dropped."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.monotonic() < deadline:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S
                )
            assert reader is not None
            began = time.perf_counter()
            writer.write(make_request())
            try:
                status, body, close = await asyncio.wait_for(_read_response(reader), RESPONSE_TIMEOUT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                tally.socket_errors += 1
                writer.close()
                writer = None
                continue
            tally.latencies_s.append(time.perf_counter() - began)
            if status == expected:
                tally.ok += 1
            else:
                tally.other += 1
                tally.first_other = tally.first_other or f"{status} {body[:200].decode(errors='replace')}"
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _python_load(
    port: int,
    mode: str,
    store: str,
    sku: str,
    connections: int,
    duration_s: float,
    nonce: str,
    token: str | None = None,
) -> HttpRun:
    host = f"Host: 127.0.0.1:{port}\r\n"
    host += "".join(f"{name}: {value}\r\n" for name, value in auth_headers(token).items())  # --token
    sequence = iter(range(1, 1 << 62))
    fixed = f"GET /v1/stores/{store}/stock/{sku} HTTP/1.1\r\n{host}\r\n".encode()

    reserving = mode in ("reserve", "reserve-online")
    channel = {"channel": "online"} if mode == "reserve-online" else {}

    def make_request() -> bytes:
        if not reserving:
            return fixed
        body = dumps(
            {"reservation_id": f"{nonce}-py-{next(sequence)}", **channel, "lines": [{"sku": sku, "qty": 1}]}
        )
        return (
            f"POST /v1/stores/{store}/reservations HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    tally = _Tally()
    began = time.monotonic()
    deadline = began + duration_s
    await asyncio.gather(
        *(
            _connection(port, make_request, 201 if reserving else 200, deadline, tally)
            for _ in range(connections)
        )
    )
    elapsed = time.monotonic() - began
    return HttpRun(
        tool="python-asyncio",
        connections=connections,
        ok=tally.ok,
        other=tally.other,
        socket_errors=tally.socket_errors,
        elapsed_s=elapsed,
        latency_ms=latency_summary_ms(tally.latencies_s),
        unanswered_max=tally.socket_errors,
        first_other=tally.first_other,
    )


def latency_summary_ms(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {name: 0.0 for name in ("mean", "p50", "p90", "p99", "max")}
    ordered = sorted(latencies_s)

    def percentile(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 3)

    return {
        "mean": round(sum(ordered) / len(ordered) * 1000, 3),
        "p50": percentile(50),
        "p90": percentile(90),
        "p99": percentile(99),
        "max": round(ordered[-1] * 1000, 3),
    }


# --- batched events -----------------------------------------------------------------------------------------


@dataclass
class BatchRun:
    """Reservation events sent in arrays to POST /v1/events, counted by outcome."""

    senders: int
    batch_size: int
    requests: int
    accepted: int
    outcomes: dict[str, int]
    elapsed_s: float
    latency_ms: dict[str, float]
    first_other: str

    @property
    def per_s(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": "python-http.client",
            "senders": self.senders,
            "batch_size": self.batch_size,
            "requests": self.requests,
            "accepted": self.accepted,
            "outcomes": self.outcomes,
            "elapsed_s": round(self.elapsed_s, 3),
            "accepted_per_s": round(self.per_s, 1),
            "request_latency_ms": self.latency_ms,
            "first_other": self.first_other,
        }


def reservation_batch(store: str, skus: list[str], chooser: random.Random, prefix: str, size: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    return dumps(
        [
            {
                "specversion": "1.0",
                "id": f"{prefix}-{i}",
                "source": "bench/batch",
                "type": "stock.reservation",
                "time": now,
                "subject": store,
                "data": {
                    "reservation_id": f"{prefix}-{i}",
                    "lines": [{"sku": chooser.choice(skus), "qty": 1}],
                },
            }
            for i in range(size)
        ]
    )


def send_batches(
    port: int,
    store: str,
    skus: list[str],
    senders: int,
    batch_size: int,
    duration_s: float,
    nonce: str,
    *,
    requests_max: int | None = None,
    seed: int = 0,
    token: str | None = None,
) -> BatchRun:
    """`senders` threads, each with a keep-alive connection, posting arrays until the time is up (or each
    has sent `requests_max`); the request in flight at the deadline is awaited and counted: exact counts.
    Sender n picks its SKUs with random.Random(seed + n): give concurrent calls different seeds."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    problems: list[str] = []
    requests = 0
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def sender(number: int) -> None:
        nonlocal requests
        chooser = random.Random(seed + number)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RESPONSE_TIMEOUT_S * 4)
        sequence = 0
        try:
            while sequence < requests_max if requests_max is not None else time.monotonic() < deadline:
                sequence += 1
                body = reservation_batch(store, skus, chooser, f"{nonce}-{number}-{sequence}", batch_size)
                began = time.perf_counter()
                conn.request(
                    "POST",
                    "/v1/events",
                    body=body,
                    headers={"Content-Type": "application/cloudevents-batch+json"} | auth_headers(token),
                )
                response = conn.getresponse()
                raw = response.read()
                took = time.perf_counter() - began
                counted: Counter[str] = Counter()
                sample = ""
                if response.status == 200:
                    for result in loads(raw)["results"]:
                        counted[result["outcome"]] += 1
                        if result["outcome"] != "accepted" and not sample:
                            sample = json.dumps(result)[:300]
                else:
                    counted[f"http-{response.status}"] += batch_size
                    sample = f"{response.status} {raw[:300].decode(errors='replace')}"
                with lock:
                    requests += 1
                    outcomes.update(counted)
                    latencies.append(took)
                    if sample:
                        problems.append(sample)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
            with lock:
                problems.append(f"sender {number} stopped: {error!r}")
                outcomes["sender-error"] += 1
        finally:
            conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + RESPONSE_TIMEOUT_S * 4 + 30)
    elapsed = time.monotonic() - began
    if any(thread.is_alive() for thread in threads):
        raise BenchError("a batch sender did not finish in time")
    return BatchRun(
        senders=senders,
        batch_size=batch_size,
        requests=requests,
        accepted=outcomes["accepted"],
        outcomes=dict(outcomes),
        elapsed_s=elapsed,
        latency_ms=latency_summary_ms(latencies),
        first_other=problems[0] if problems else "",
    )


# --- pre-made events, each store's in order -----------------------------------------------------------------


@dataclass
class ArrayRun:
    """Pre-made events POSTed in arrays, each store's in order; every result kept, in the order sent."""

    senders: int
    array_size: int
    requests: int
    events: int
    results: list[dict[str, Any]]
    elapsed_s: float
    latency_ms: dict[str, float]
    problems: list[str]

    @property
    def per_s(self) -> float:
        return len(self.results) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        outcomes = Counter(result["outcome"] for result in self.results)
        return {
            "tool": "python-http.client",
            "senders": self.senders,
            "array_size": self.array_size,
            "requests": self.requests,
            "events_sent": self.events,
            "results": len(self.results),
            "outcomes": dict(outcomes),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.per_s, 1),
            "request_latency_ms": self.latency_ms,
            "problems": self.problems[:5],
        }


class _StoreQueue:
    """Hands out arrays so that a store's next array goes only once its previous one is answered (its
    events keep their order, as on a Kafka partition); the store with the most left goes first."""

    def __init__(self, arrays: dict[str, list[bytes]]) -> None:
        self.left = {store: list(reversed(bodies)) for store, bodies in arrays.items() if bodies}
        self.busy: set[str] = set()
        self.changed = threading.Condition()

    def take(self, deadline: float) -> tuple[str, bytes] | None:
        with self.changed:
            while True:
                free = [store for store in self.left if store not in self.busy]
                if free:
                    store = max(free, key=lambda s: len(self.left[s]))
                    self.busy.add(store)
                    body = self.left[store].pop()
                    if not self.left[store]:
                        del self.left[store]
                    return store, body
                if not self.left or not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    return None

    def done(self, store: str) -> None:
        with self.changed:
            self.busy.discard(store)
            self.changed.notify_all()

    def abort(self) -> None:
        with self.changed:
            self.left.clear()
            self.changed.notify_all()


def send_store_arrays(
    port: int,
    events_by_store: dict[str, list[bytes]],
    senders: int,
    array_size: int,
    deadline_s: float,
    *,
    token: str | None = None,
) -> ArrayRun:
    """`senders` threads with keep-alive connections POST each store's events (raw CloudEvents JSON) in
    arrays of `array_size`, in order; timed from the first request to the last answer."""
    arrays = {
        store: [
            b"[" + b",".join(values[i : i + array_size]) + b"]" for i in range(0, len(values), array_size)
        ]
        for store, values in events_by_store.items()
    }
    queue = _StoreQueue(arrays)
    answered: dict[str, list[dict[str, Any]]] = {store: [] for store in arrays}  # in order: one in flight
    latencies: list[float] = []
    problems: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + deadline_s

    def sender(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RESPONSE_TIMEOUT_S * 4)
        try:
            while (taken := queue.take(deadline)) is not None:
                store, body = taken
                began = time.perf_counter()
                conn.request(
                    "POST",
                    "/v1/events",
                    body=body,
                    headers={"Content-Type": "application/cloudevents-batch+json"} | auth_headers(token),
                )
                response = conn.getresponse()
                raw = response.read()
                took = time.perf_counter() - began
                if response.status != 200:
                    raise ValueError(f"{response.status} {raw[:300].decode(errors='replace')}")
                with lock:
                    answered[store].extend(loads(raw)["results"])
                    latencies.append(took)
                queue.done(store)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
            with lock:
                problems.append(f"sender {number} stopped: {error!r}")
            queue.abort()  # its store would stay busy: the others stop too, and the check says why
        finally:
            conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + RESPONSE_TIMEOUT_S * 4 + 30)
    elapsed = time.monotonic() - began
    if any(thread.is_alive() for thread in threads):
        raise BenchError("an array sender did not finish in time")
    results = [result for store in arrays for result in answered[store]]
    return ArrayRun(
        senders=senders,
        array_size=array_size,
        requests=len(latencies),
        events=sum(len(values) for values in events_by_store.values()),
        results=results,
        elapsed_s=elapsed,
        latency_ms=latency_summary_ms(latencies),
        problems=problems,
    )
