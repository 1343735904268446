"""Webhooks in: store the delivery, answer at once, process it later from the inbox.

MoySklad waits 1500 ms for an answer and then redelivers (adapters/moysklad.py), so the receiver
does one insert and answers 200; the delivery id (MoySklad's requestId) is the primary key, so a
redelivery inserts nothing. `InboxWorker` processes the stored deliveries in its own thread:
what cannot be processed now (the ledger or the sender unreachable) stays pending and is retried;
what is wrong in itself is given up after `retries_max` attempts and raised as an alert.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

import orjson

from adapters.db import journal, now_text, transaction
from adapters.httpserver import Reply, Request
from adapters.limits import Backoff, Stopper
from adapters.outbound import TargetUnavailable
from adapters.sink import SinkError
from adapters.status import metrics_text

log = logging.getLogger("adapters.inbound")

DELIVERY_BYTES_MAX = 4 * 1024 * 1024


def store_delivery(recorder: Any, source: str, delivery_id: str, payload: Any) -> bool:
    """Stores one delivery; False if that delivery id was stored before (a redelivery)."""
    with transaction(recorder) as tx:
        seen = tx.fetchone(
            "SELECT 1 AS seen FROM adapter_inbox WHERE source = %s AND delivery_id = %s",
            (source, delivery_id),
        )
        if seen:
            return False
        tx.execute(
            "INSERT INTO adapter_inbox (source, delivery_id, payload, received_at, attempts) "
            "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (source, delivery_id) DO NOTHING",
            (source, delivery_id, orjson.dumps(payload).decode(), now_text()),
        )
    return True


class WebhookReceiver:
    """The HTTP side: POST /moysklad/webhook/<secret>, POST /wms/status/<secret>, GET /metrics, /healthz."""

    def __init__(self, recorder: Any, moysklad_secret: str | None, wms_secret: str | None) -> None:
        self.recorder = recorder
        self.routes = {}
        if moysklad_secret:
            self.routes[f"/moysklad/webhook/{moysklad_secret}"] = "moysklad"
        if wms_secret:
            self.routes[f"/wms/status/{wms_secret}"] = "wms"

    def handle(self, request: Request) -> Reply:
        if request.method == "GET" and request.path == "/metrics":
            return Reply(200, metrics_text(self.recorder), content_type="text/plain; version=0.0.4")
        if request.method == "GET" and request.path == "/healthz":
            return Reply(200, {"status": "ok"})
        source = next((s for path, s in self.routes.items() if hmac.compare_digest(path, request.path)), None)
        if source is None or request.method != "POST":
            return Reply(404, {"title": "Not found"})
        if len(request.body) > DELIVERY_BYTES_MAX:
            return Reply(413, {"title": "Content too large"})
        try:
            payload = request.json()
        except ValueError:
            return Reply(400, {"title": "The body is not JSON"})
        delivery_id = _delivery_id(source, request, payload)
        is_new = store_delivery(self.recorder, source, delivery_id, payload)
        if not is_new:
            log.info("%s delivery %s received again: already stored", source, delivery_id)
        return Reply(200, {"stored": is_new})


def _delivery_id(source: str, request: Request, payload: Any) -> str:
    if source == "moysklad":
        request_ids = request.query.get("requestId")
        if request_ids:
            return request_ids[0][:200]
    header = request.header("X-Request-Id") or request.header("Idempotency-Key")
    if header:
        return header[:200]
    if source == "wms" and isinstance(payload, dict) and payload.get("id") and payload.get("status"):
        return f"{payload['id']}:{payload['status']}"[:200]
    return hashlib.sha256(request.body).hexdigest()


Handler = Callable[[Any], None]


class InboxWorker:
    def __init__(
        self,
        recorder: Any,
        handlers: dict[str, Handler],
        *,
        batch_max: int = 100,
        retries_max: int = 5,
        backoff: Backoff | None = None,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.recorder = recorder
        self.handlers = handlers
        self.batch_max = batch_max
        self.retries_max = retries_max
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.poll_interval_s = poll_interval_s
        self.stopper = Stopper()

    def run_forever(self) -> None:
        failures_in_a_row = 0
        while not self.stopper.stopped:
            try:
                done, retry_later = self.run_once()
            except Exception:
                log.exception("inbox round failed")
                done, retry_later = 0, 1
            failures_in_a_row = failures_in_a_row + 1 if retry_later and not done else 0
            if failures_in_a_row:
                self.stopper.sleep(self.backoff.delay_s(failures_in_a_row))
            elif not done:
                self.stopper.sleep(self.poll_interval_s)

    def stop(self) -> None:
        self.stopper.stop()

    def run_once(self) -> tuple[int, int]:
        """Processes pending deliveries; returns (processed, left for later)."""
        with transaction(self.recorder) as tx:
            rows = (
                tx.fetchall(
                    "SELECT source, delivery_id, payload, attempts FROM adapter_inbox WHERE "
                    "processed_at IS NULL "
                    "AND source IN ("
                    + ",".join(["%s"] * len(self.handlers))
                    + ") ORDER BY received_at LIMIT %s",
                    (*self.handlers, self.batch_max),
                )
                if self.handlers
                else []
            )
        done = retry_later = 0
        for row in rows:
            source, delivery_id, attempts = row["source"], row["delivery_id"], int(row["attempts"]) + 1
            try:
                self.handlers[source](orjson.loads(row["payload"]))
            except (TargetUnavailable, SinkError) as error:
                retry_later += 1
                self._attempted(source, delivery_id, attempts, str(error), give_up=False)
                log.warning("%s delivery %s: will retry: %s", source, delivery_id, error)
                break  # keep deliveries in order: the next round starts with this one again
            except (ValueError, KeyError, TypeError) as error:
                give_up = attempts >= self.retries_max
                self._attempted(
                    source, delivery_id, attempts, f"{type(error).__name__}: {error}", give_up=give_up
                )
                if give_up:
                    done += 1
                else:
                    retry_later += 1
                continue
            self._processed(source, delivery_id, attempts)
            done += 1
        return done, retry_later

    def _processed(self, source: str, delivery_id: str, attempts: int) -> None:
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_inbox SET processed_at = %s, attempts = %s WHERE source = %s AND "
                "delivery_id = %s",
                (now_text(), attempts, source, delivery_id),
            )

    def _attempted(self, source: str, delivery_id: str, attempts: int, reason: str, *, give_up: bool) -> None:
        with transaction(self.recorder) as tx:
            tx.execute(
                "UPDATE adapter_inbox SET attempts = %s, last_error = %s, processed_at = %s "
                "WHERE source = %s AND delivery_id = %s",
                (attempts, reason[:2000], now_text() if give_up else None, source, delivery_id),
            )
            if give_up:
                journal(
                    tx,
                    source,
                    "alert",
                    f"delivery {delivery_id}",
                    f"given up after {attempts} attempts: {reason}",
                )
        if give_up:
            log.error(
                "ALERT %s delivery %s given up after %d attempts: %s", source, delivery_id, attempts, reason
            )
