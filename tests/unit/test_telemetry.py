"""Request ids, log lines and the plain histograms (ledger/telemetry), and the request id on the
writer's wire: each piece on its own, without a server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import os
import pickle
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.api.http_metrics import HttpMetrics
from ledger.telemetry.histogram import FOLD_AT, SECONDS_BOUNDS, DeferredHistogram, Histogram, cumulative
from ledger.telemetry.logs import FIELDS, logging_config
from ledger.telemetry.request_ids import BATCH_REQUEST_IDS, REQUEST_ID, new_request_id, sound_or_new
from ledger.writer.batch_logging import batch_logged
from ledger.writer.stats import WriterStats
from ledger.writer.submission import Submission, SubmissionFailed, WriterUnavailable
from ledger.writer.wire import FRAME, WriteRequest, decode_to_writer, encode


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The root logger as the service configures it (the format is the test's parameter), into a
    string; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("kafka").level
    logging.config.dictConfig(logging_config(request.param, "WARNING"))
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        root.handlers[:], _, kafka_level = saved[0], None, saved[2]
        root.setLevel(saved[1])
        logging.getLogger("kafka").setLevel(kafka_level)


@pytest.mark.parametrize("captured", ["json"], indirect=True)
def test_a_json_line_carries_the_request_id_its_fields_and_its_traceback(captured: io.StringIO) -> None:
    async def in_a_request() -> None:
        REQUEST_ID.set(b"req-1")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("ledger.api").exception("failed %s", "here", extra={FIELDS: {"status": 500}})

    asyncio.run(in_a_request())
    logging.getLogger("ledger").info("outside any request")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["request_id"] == "req-1" and first["message"] == "failed here" and first["status"] == 500
    assert (
        first["level"] == "ERROR"
        and first["logger"] == "ledger.api"
        and "ValueError: boom" in first["exception"]
    )
    assert "request_id" not in second  # the request's context ended with its task


@pytest.mark.parametrize("captured", ["text"], indirect=True)
def test_a_text_line_names_the_request_and_a_batch_its_requests(captured: io.StringIO) -> None:
    token = REQUEST_ID.set(b"req-2")
    try:
        logging.getLogger("ledger").warning("one")
    finally:
        REQUEST_ID.reset(token)
    batch = [
        Submission([], lambda _: None, "a"),
        Submission([], lambda _: None),
        Submission([], lambda _: None, "b"),
    ]
    with batch_logged(batch):
        logging.getLogger("ledger.writer").warning("two")
    assert BATCH_REQUEST_IDS.get() is None
    one, two = captured.getvalue().splitlines()
    assert one.endswith("ledger: one [request_id=req-2]")
    assert two.endswith("ledger.writer: two [request_ids=a,b]")


@pytest.mark.parametrize("captured", ["text"], indirect=True)
def test_the_kafka_client_librarys_chatter_is_kept_at_warning(captured: io.StringIO) -> None:
    logging.getLogger("kafka.conn").info("connecting")
    logging.getLogger("kafka.conn").warning("broker gone")
    assert captured.getvalue().count("\n") == 1 and "broker gone" in captured.getvalue()


def test_a_sound_id_is_kept_and_anything_else_replaced() -> None:
    assert sound_or_new(b"till-7:2026/abc+=.") == b"till-7:2026/abc+=."
    for unsound in (b"", b"two words", b"x" * 129, b"line\nbreak", "é".encode()):
        made = sound_or_new(unsound)
        assert len(made) == 32 and made != unsound
    assert sound_or_new(b"") != sound_or_new(b"")


def test_new_ids_are_32_hex_digits_and_never_repeat_across_blocks_threads_or_a_fork() -> None:
    made = [new_request_id() for _ in range(10_000)]  # past two blocks of 4,096
    assert len(set(made)) == len(made)
    assert all(len(made_id) == 32 and made_id.isalnum() and made_id == made_id.lower() for made_id in made)
    assert all(int(made_id, 16) >= 0 for made_id in made)
    taken: list[list[bytes]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda mine=mine: mine.extend(new_request_id() for _ in range(20_000)))
        for mine in taken
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [made_id for mine in taken for made_id in mine] + made
    assert len(set(every)) == len(every)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next ids, to the parent; never back into pytest
        try:
            os.write(writer, b"".join(new_request_id() for _ in range(100)))
        finally:
            os._exit(0)
    os.close(writer)
    _, status = os.waitpid(child, 0)
    childs = os.read(reader, 3200)
    os.close(reader)
    assert status == 0 and len(childs) == 3200
    parents = b"".join(new_request_id() for _ in range(100))
    assert childs[:16] != parents[:16]  # another random half: not the parent's ids again


def test_the_request_id_crosses_the_wire_and_costs_nothing_when_absent() -> None:
    with_id = WriteRequest(7, [], "req-3")
    assert decode_to_writer(encode(with_id)[FRAME.size :]) == with_id
    without = encode(WriteRequest(7, []))
    assert pickle.loads(without[FRAME.size :]) == ("w", 7, [])  # the frame it was before the field
    assert decode_to_writer(without[FRAME.size :]) == WriteRequest(7, [], None)


def test_a_histogram_observes_into_prometheus_buckets() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert cumulative(histogram.bounds, histogram.snapshot()) == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.snapshot()[1] == pytest.approx(3.65)


def test_a_deferred_histogram_counts_as_the_plain_one_whenever_it_is_read() -> None:
    bounds = (0.0005, 0.001, 0.01, 1.0)
    plain, deferred = Histogram(bounds), DeferredHistogram(bounds)
    chooser = random.Random(7)
    # Values on the bounds themselves too: Prometheus' buckets are "less than or equal".
    values = [chooser.choice([*bounds, 0.0, 2.0, chooser.uniform(0, 1.5)]) for _ in range(3 * FOLD_AT + 5)]
    for index, value in enumerate(values, 1):
        plain.observe(value)
        deferred.observe(value)
        assert len(deferred.pending) < FOLD_AT  # never more kept than its limit
        if index % 777 == 0 or index == len(values):  # read mid-way and at the end
            assert deferred.snapshot()[0] == plain.snapshot()[0]
            assert deferred.snapshot()[1] == pytest.approx(plain.snapshot()[1])
            assert not deferred.pending


def test_http_methods_outside_the_usual_ones_share_one_label() -> None:
    metrics = HttpMetrics()
    for method in ("GET", "BREW", "PROPFIND"):
        metrics.observe("unmatched", method, 405, 0.001)
    assert sorted(metrics.series) == [("unmatched", "GET", 405), ("unmatched", "OTHER", 405)]


def test_the_http_metrics_keep_a_bounded_list_and_a_scrape_counts_every_request() -> None:
    """HttpMetrics.observe writes the deferred observation out: it must fold at the same limit."""
    metrics, plain = HttpMetrics(), Histogram(SECONDS_BOUNDS)
    chooser = random.Random(11)
    key = ("/v1/stores/{store}/stock/{sku}", "GET", 200)
    for _ in range(3 * FOLD_AT + 5):
        seconds = chooser.choice([*SECONDS_BOUNDS, chooser.uniform(0, 12)])
        metrics.observe(*key, seconds)
        plain.observe(seconds)
        assert len(metrics.series[key].pending) < FOLD_AT
    families = {family.name: family for family in metrics.collect()}
    assert [
        sample.value for sample in families["ledger_http_requests"].samples if sample.name.endswith("_total")
    ] == [3 * FOLD_AT + 5]
    buckets = [
        (sample.labels["le"], sample.value)
        for sample in families["ledger_http_request_duration_seconds"].samples
        if sample.name.endswith("_bucket")
    ]
    assert buckets == cumulative(plain.bounds, plain.snapshot())


def test_the_writers_stats_count_a_batch_once_its_callers_are_answered_and_its_rejects() -> None:
    stats = WriterStats(slow_batch_s=60.0)
    answered: list[object] = []
    batch = stats.timed(
        [Submission([object()] * 3, answered.append), Submission([object()], answered.append)]
    )  # type: ignore[list-item]
    batch[0].done([])
    assert stats.batch_events.snapshot()[0] == (0,) * 14  # one caller still waits
    batch[1].done([])
    snapshot = stats.snapshot(queued_requests=2)
    assert sum(snapshot.batch_events[0]) == 1 and snapshot.batch_events[1] == 4
    assert sum(snapshot.commit_seconds[0]) == 1 and snapshot.queued_requests == 2
    failed = stats.timed([Submission([object()], answered.append), Submission([object()], answered.append)])  # type: ignore[list-item]
    failed[0].done(WriterUnavailable("down"))
    failed[1].done(SubmissionFailed("bad"))
    stats.queue_full()
    assert stats.snapshot(0).rejects == (1, 1, 1)  # queue_full, unavailable, refused
    assert sum(stats.snapshot(0).batch_events[0]) == 1  # a failed batch is no commit
    assert len(answered) == 4


@pytest.mark.parametrize("captured", ["json", "text"], indirect=True)
def test_the_access_log_names_the_principal_never_the_token_nor_the_query(captured: io.StringIO) -> None:
    from ledger.access.scopes import Grant, Role
    from ledger.api.gate import GRANT_KEY
    from ledger.api.telemetry import RequestTelemetry

    async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope[GRANT_KEY] = Grant(name="till-3", role=Role.PRODUCER)  # as the gate leaves it
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/stores/s1/reservations",
        "raw_path": b"/v1/stores/s1/reservations",
        "query_string": b"secret=1",
        "headers": [(b"authorization", b"Bearer tok-SECRET"), (b"x-request-id", b"acc-1")],
    }
    metrics = HttpMetrics()
    asyncio.run(RequestTelemetry(answer, [], metrics, access_log_on=True)(scope, None, keep))  # type: ignore[arg-type]
    assert (b"x-request-id", b"acc-1") in sent[0]["headers"]
    (text,) = captured.getvalue().splitlines()
    if not text.startswith("{"):  # the text line: the same fields (the README's example)
        assert " ledger.http.access: POST /v1/stores/s1/reservations 201 " in text
        assert text.endswith(" ms route=unmatched principal=till-3 [request_id=acc-1]"), text
        assert "SECRET" not in text and "secret" not in text
        return
    line = json.loads(text)
    assert line["logger"] == "ledger.http.access" and line["request_id"] == "acc-1"
    assert (line["method"], line["path"], line["status"], line["principal"]) == (
        "POST",
        "/v1/stores/s1/reservations",
        201,
        "till-3",
    )
    assert "SECRET" not in text and "secret" not in text
    assert list(metrics.series) == [("unmatched", "POST", 201)]  # no route of this test's app matched


@pytest.mark.parametrize("captured", ["text"], indirect=True)
def test_the_kafka_clients_repeated_lines_are_folded_and_the_ledgers_are_not(captured: io.StringIO) -> None:
    for port in range(5):
        logging.getLogger("kafka.net.manager").error("Connection failed: 111 ECONNREFUSED to :%d", port)
        logging.getLogger("ledger.kafka").warning("the Kafka consumer: no broker at :%d answered", port)
    lines = captured.getvalue().splitlines()
    assert sum("kafka.net.manager: Connection failed" in line for line in lines) == 1
    assert sum("ledger.kafka: the Kafka consumer" in line for line in lines) == 5
