"""The webhook spool and the inbox: durable files drained once, in arrival order; 4xx for bad deliveries."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.db import transaction
from adapters.deliveries import Delivery, insert_delivery
from adapters.inbound import InboxWorker, WebhookAccess, WebhookReceiver
from adapters.spool import DeliverySpool, SpoolFull, default_spool_dir
from adapters.webhook_server import WebhookServer
from adapters.webhook_store import DeliveryStore, StoredIn
from ledger.clock import utc_text


def delivery(number: int, seconds_ago: float = 10.0, source: str = "wms") -> Delivery:
    received_at = utc_text(datetime.now(UTC) - timedelta(seconds=seconds_ago))
    return Delivery(
        source, f"d-{number}", received_at, json.dumps({"id": f"PO-{number}", "status": "PICKED"})
    )


def post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_spooled_delivery_is_one_whole_file_read_back_as_written(tmp_path):
    spool = DeliverySpool(tmp_path / "spool", deliveries_max=10)
    first, second = delivery(1, seconds_ago=5), delivery(2, seconds_ago=1)

    spool.append(second)
    spool.append(first)

    assert [spool.read(path) for path in spool.pending(10)] == [first, second]  # arrival order
    assert not list((tmp_path / "spool").glob(".*.tmp"))


def test_a_full_spool_refuses_and_the_receiver_answers_503_with_retry_after(tmp_path, recorder):
    spool = DeliverySpool(tmp_path / "spool", deliveries_max=1)
    spool.append(delivery(1))
    with pytest.raises(SpoolFull):
        spool.append(delivery(2))

    store = DeliveryStore(recorder, spool, database_wait_s=0.2, attempts_max=1)
    with transaction(recorder) as tx:  # holds SQLite's write lock: the database cannot take it
        tx.execute("DELETE FROM adapter_inbox")
        server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(wms_secret="w1"), store)).start()
        try:
            status, body = post(f"{server.url}/wms/status/w1", b'{"id": "PO-1", "status": "PICKED"}')
        finally:
            server.stop()
            store.close()
    assert (status, body["type"]) == (503, "spool-full")


def test_a_spool_write_cut_short_by_a_full_disk_is_answered_5xx_and_leaves_no_file(
    tmp_path, recorder, monkeypatch
):
    """os.write may write part of what it is given: the rest was never written, the half file was
    renamed into the spool, answered 200, and set aside later as unreadable: a delivery lost."""
    spool = DeliverySpool(tmp_path / "spool", 10)
    store = DeliveryStore(recorder, spool, database_wait_s=0.2, attempts_max=1)
    write = os.write
    spool_writes: list[int] = []

    def full_disk(descriptor: int, data: Any) -> int:
        if not os.readlink(f"/proc/self/fd/{descriptor}").startswith(str(spool.directory)):
            return write(descriptor, data)
        spool_writes.append(len(data))
        if len(spool_writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(descriptor, bytes(data)[: len(data) // 2])  # as much as the disk had room for

    monkeypatch.setattr(os, "write", full_disk)
    with transaction(recorder) as tx:  # holds SQLite's write lock: the database cannot take it
        tx.execute("DELETE FROM adapter_inbox")
        server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(wms_secret="w1"), store)).start()
        try:
            status, _ = post(f"{server.url}/wms/status/w1", b'{"id": "PO-1", "status": "PICKED"}')
        finally:
            server.stop()
            store.close()
    assert status >= 500 and len(spool_writes) == 2  # the sender sends it again
    assert spool.pending(10) == [] and list(spool.directory.iterdir()) == []


def test_only_unauthenticated_or_malformed_deliveries_get_a_4xx(tmp_path, recorder):
    store = DeliveryStore(
        recorder, DeliverySpool(tmp_path / "spool", 10), database_wait_s=0.5, attempts_max=2
    )
    server = WebhookServer(
        WebhookReceiver(recorder, WebhookAccess(moysklad_secret="m1", wms_secret="w1"), store)
    ).start()
    try:
        answers = [
            post(f"{server.url}/moysklad/webhook/wrong", b'{"events": []}'),
            post(f"{server.url}/moysklad/webhook/m1", b"not json"),
            post(f"{server.url}/moysklad/webhook/m1", b'{"no": "events"}'),
            post(f"{server.url}/moysklad/webhook/m1", b'{"events": [1]}'),
            post(f"{server.url}/wms/status/w1", b'{"id": "PO-1"}'),
            post(f"{server.url}/moysklad/webhook/m1?requestId=r-1", b'{"events": []}'),
            post(f"{server.url}/moysklad/webhook/m1?requestId=r-1", b'{"events": []}'),
        ]
    finally:
        server.stop()
        store.close()
    assert [(status, body.get("type") or body.get("stored")) for status, body in answers] == [
        (404, "not-found"),
        (400, "delivery-malformed"),
        (400, "delivery-malformed"),
        (400, "delivery-malformed"),
        (400, "delivery-malformed"),
        (200, StoredIn.DATABASE.value),
        (200, StoredIn.BEFORE.value),
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers", "field"),
    [
        ("/moysklad/webhook/m1?requestId=r%00", b'{"events": []}', {}, "requestId"),
        ("/moysklad/webhook/m1", b'{"events": []}', {"X-Request-Id": "r\tq"}, "X-Request-Id"),
        (
            "/wms/status/w1",
            b'{"id": "PO-1", "status": "PICKED"}',
            {"Idempotency-Key": "k\x85"},
            "Idempotency-Key",
        ),
        ("/wms/status/w1", b'{"id": "PO-\\u0000", "status": "PICKED"}', {}, "id"),
        ("/wms/status/w1", b'{"id": "PO-1", "status": "PICKED\\n"}', {}, "status"),
    ],
)
def test_a_delivery_key_holding_a_control_character_is_refused_by_name(
    tmp_path, recorder, path, body, headers, field
):
    """PostgreSQL cannot store a NUL in text: such a delivery id was answered 200 and spooled, and
    the spool's drain then failed on it every round, stopping all inbound processing."""
    spool = DeliverySpool(tmp_path / "spool", 10)
    store = DeliveryStore(recorder, spool, database_wait_s=0.5, attempts_max=2)
    server = WebhookServer(
        WebhookReceiver(recorder, WebhookAccess(moysklad_secret="m1", wms_secret="w1"), store)
    ).start()
    try:
        request = urllib.request.Request(server.url + path, data=body, method="POST", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        answer = json.loads(refused.value.read())
    finally:
        server.stop()
        store.close()
    assert (refused.value.code, answer["type"]) == (400, "delivery-malformed")
    assert f"`{field}`" in answer["detail"]
    assert spool.pending(10) == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "PO-1", "status": "PICKED", "n": 123456789012345678901234567890}',
        b'{"id": "PO-1", "status": "PICKED", "note": "\\ud800"}',
    ],
)
def test_a_json_body_the_receiver_cannot_store_as_json_is_a_400_not_a_500(tmp_path, recorder, body):
    """Read as JSON, then not encoded again (orjson's 64-bit integers, valid UTF-8 only): a 500,
    and the sender tried again, for ever, what can never be stored."""
    store = DeliveryStore(
        recorder, DeliverySpool(tmp_path / "spool", 10), database_wait_s=0.5, attempts_max=2
    )
    server = WebhookServer(WebhookReceiver(recorder, WebhookAccess(wms_secret="w1"), store)).start()
    try:
        status, answer = post(f"{server.url}/wms/status/w1", body)
    finally:
        server.stop()
        store.close()
    assert (status, answer["type"]) == (400, "delivery-malformed"), answer


def test_the_inbox_processes_database_and_spooled_deliveries_once_in_arrival_order(tmp_path, recorder):
    spool = DeliverySpool(tmp_path / "spool", deliveries_max=10)
    with transaction(recorder) as tx:
        insert_delivery(tx, delivery(1, seconds_ago=30))
        insert_delivery(tx, delivery(3, seconds_ago=10))
        insert_delivery(tx, delivery(5, seconds_ago=0))  # just arrived: not settled yet
    spool.append(delivery(2, seconds_ago=20))
    spool.append(delivery(4, seconds_ago=5))
    spool.append(delivery(3, seconds_ago=10))  # also in the database: stored once
    seen: list[str] = []
    inbox = InboxWorker(
        recorder, {"wms": lambda payload: seen.append(payload["id"])}, spool=spool, settle_s=2.0
    )

    assert inbox.run_once() == (4, 0)
    assert inbox.run_once() == (0, 0)

    assert seen == ["PO-1", "PO-2", "PO-3", "PO-4"]
    assert spool.pending(10) == []


def test_a_delivery_is_not_given_up_while_the_database_is_unavailable(tmp_path, recorder):
    """A handler's failure counts against its delivery only when the delivery is the cause: with
    the database unavailable, the round fails, nothing is counted, and every delivery waits."""
    with transaction(recorder) as tx:
        insert_delivery(tx, delivery(1))

    def locked(payload: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    inbox = InboxWorker(recorder, {"wms": locked}, retries_max=1, retry_first_s=0)

    for _ in range(3):
        with pytest.raises(sqlite3.OperationalError):
            inbox.run_once()

    with transaction(recorder) as tx:
        (row,) = tx.fetchall("SELECT attempts, processed_at FROM adapter_inbox")
    assert (row["attempts"], row["processed_at"]) == (0, None)


def test_an_unreadable_spool_file_is_set_aside_with_an_alert_and_the_others_go_on(tmp_path, recorder):
    spool = DeliverySpool(tmp_path / "spool", deliveries_max=10)
    spool.append(delivery(1))
    (tmp_path / "spool" / "00000000T000000.000000Z-1-000000000.delivery").write_bytes(b"{half a file")
    seen: list[str] = []
    inbox = InboxWorker(recorder, {"wms": lambda payload: seen.append(payload["id"])}, spool=spool)

    assert inbox.run_once() == (1, 0)

    assert seen == ["PO-1"]
    assert [p.name for p in (tmp_path / "spool" / "set-aside").iterdir()] == [
        "00000000T000000.000000Z-1-000000000.delivery"
    ]
    with transaction(recorder) as tx:
        (alert,) = tx.fetchall("SELECT subject, detail FROM adapter_journal WHERE kind = 'alert'")
    assert "not JSON" in alert["detail"]


def test_the_default_spool_is_beside_the_sqlite_file_and_otherwise_in_the_state_directory(monkeypatch):
    assert default_spool_dir("sqlite:////var/lib/ledger/ledger.db") == Path(
        "/var/lib/ledger/ledger.db-webhook-spool"
    )
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    assert default_spool_dir("postgresql://db/ledger") == Path("/srv/state/stock-ledger/webhook-spool")


def test_an_insert_its_request_gave_up_on_does_not_commit_later(tmp_path, recorder):
    spool = DeliverySpool(tmp_path / "spool", deliveries_max=10)
    store = DeliveryStore(recorder, spool, database_wait_s=0.1, attempts_max=1)
    could_commit: list[bool] = []

    class SlowInserts:  # gets its connection only after the request stopped waiting
        def insert(self, delivery: Delivery, attempt: Any) -> bool:
            time.sleep(0.3)
            could_commit.append(attempt.may_commit())
            return True

        def close(self) -> None:
            return None

    store._inserts = SlowInserts()  # type: ignore[assignment]
    try:
        assert store.store(delivery(1)) is StoredIn.SPOOL
    finally:
        store.close()  # waits for the slow insert
    assert could_commit == [False]
    assert len(spool.pending(10)) == 1
