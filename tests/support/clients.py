"""HTTP clients in separate OS processes, released together by a barrier, to race the servers."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from typing import Any

import httpx

# One request: (server base URL, path, JSON body). One answer: (status code, JSON body).
Request = tuple[str, str, Any]
Answer = tuple[int, Any]

REQUEST_TIMEOUT_S = 60.0
BARRIER_TIMEOUT_S = 60.0


def send_all(barrier: Any, requests: list[Request]) -> list[Answer]:
    """Sends the requests one after another, after every client process is ready to start."""
    clients: dict[str, httpx.Client] = {}
    try:
        for base_url, _, _ in requests:
            if base_url not in clients:
                clients[base_url] = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S)
        barrier.wait(BARRIER_TIMEOUT_S)
        answers: list[Answer] = []
        for base_url, path, body in requests:
            response = clients[base_url].post(path, json=body)
            answers.append((response.status_code, response.json()))
        return answers
    finally:
        for client in clients.values():
            client.close()


def _child(index: int, barrier: Any, results: Any, requests: list[Request]) -> None:
    try:
        results.put((index, send_all(barrier, requests), None))
    except Exception as error:  # noqa: BLE001 - reported to the test, which fails with it
        results.put((index, None, f"{type(error).__name__}: {error}"))


def send_from_processes(request_lists: list[list[Request]], deadline_s: float = 180.0) -> list[list[Answer]]:
    """Each list of requests is sent by its own process; the processes start together.
    Returns the answers per list, in order."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(request_lists))
    results = context.Queue()
    processes = [
        context.Process(target=_child, args=(i, barrier, results, requests), daemon=True)
        for i, requests in enumerate(request_lists)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + deadline_s
    answers: dict[int, list[Answer]] = {}
    errors: list[str] = []
    try:
        while len(answers) + len(errors) < len(processes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"client processes did not finish within {deadline_s} s")
            try:
                index, answer, error = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if all(not p.is_alive() for p in processes) and results.empty():
                    raise RuntimeError("a client process died without reporting") from None
                continue
            if error is not None:
                errors.append(f"client {index}: {error}")
            else:
                answers[index] = answer
    finally:
        for process in processes:
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        with contextlib.suppress(Exception):
            results.close()
    assert not errors, errors
    return [answers[i] for i in range(len(processes))]
