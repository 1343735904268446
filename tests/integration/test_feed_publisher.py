"""The availability feed's publisher against a broker that fails, without a broker: writes go on
while it cannot publish, its position moves only over acknowledged rounds, and once the broker
answers again it catches up from the log, so every record ends up published. A round the broker
refuses for good is never skipped, and shows. One instance publishes at a time, and a frozen
database cannot hold it in a leadership query; a batch that failed to commit publishes nothing."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from collections import Counter
from typing import Any

import psycopg
import pytest

# kafka-python loads its protocol schemas with a deprecated importlib call, hundreds of times.
warnings.filterwarnings("ignore", ".*is deprecated. Use files", DeprecationWarning)

from kafka.errors import MessageSizeTooLargeError, UnknownTopicOrPartitionError  # noqa: E402
from support import api, poison  # noqa: E402
from support import events as ev  # noqa: E402
from support.ids import unique  # noqa: E402

from ledger.bootstrap import build_ledger  # noqa: E402
from ledger.config import Settings  # noqa: E402
from ledger.feed.cursor import FeedCursor  # noqa: E402
from ledger.feed.leadership import AdvisoryLeadership  # noqa: E402
from ledger.feed.record import decode_record  # noqa: E402
from ledger.kafka import producer as kafka_producer  # noqa: E402
from ledger.kafka.levels_feed import FEED_NAME, LevelsFeed  # noqa: E402
from ledger.storage.opening import open_recorder  # noqa: E402
from ledger.writer.submission import SubmissionFailed  # noqa: E402

DEADLINE_S = 30.0


class _Future:
    def __init__(self, error: BaseException | None) -> None:
        self.is_done = True
        self.exception = error

    def failed(self) -> bool:
        return self.exception is not None


class _Broker:
    """A producer's stand-in: refuses every record while `down`, else keeps it. For good: with
    `topic_missing` no producer is built, and a record of `too_large_sku` is refused at once."""

    def __init__(self) -> None:
        self.down = True
        self.topic_missing = False
        self.too_large_sku: str | None = None
        self.kept: list[tuple[bytes, bytes]] = []
        self.producers_built = 0
        self.lock = threading.Lock()

    def producer(self, _: Settings) -> Any:
        if self.topic_missing:
            raise UnknownTopicOrPartitionError("no such topic")
        self.producers_built += 1
        broker = self

        class Producer:
            def send(self, topic: str, key: bytes, value: bytes) -> _Future:
                with broker.lock:
                    if decode_record(value).sku == broker.too_large_sku:
                        raise MessageSizeTooLargeError("larger than the topic takes")
                    if broker.down:
                        return _Future(ConnectionError("broker down"))
                    broker.kept.append((key, value))
                    return _Future(None)

            def flush(self, timeout: float) -> None:
                pass

            def close(self, timeout: float) -> None:
                pass

        return Producer()


def _wait(condition: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_the_feed_falls_behind_while_the_broker_is_down_and_catches_up_after(database_url, serve, caplog):
    caplog.set_level(logging.INFO, logger="ledger.feed")
    server = serve(database_url)
    store = unique("shop")
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap="unused:9092",
        feed_poll_ms=10,
        feed_rows_per_round_max=3,
        feed_retry_backoff_ms_max=50,
    )
    broker = _Broker()
    recorder = open_recorder(database_url, 2, 30)
    feed = LevelsFeed(recorder, settings, broker.producer)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    try:
        with server.client() as client:
            first = api.record(client, ev.receipt(store, ("A", 5)))[0]["position"]
            _wait(lambda: feed.stats.rounds_failed >= 2, "failed rounds")
            # The writer is not held up by the feed: writes go on and are answered.
            for sku in "BCDEFG":
                api.record(client, ev.receipt(store, (sku, 1)))
            last = api.record(client, ev.sale(store, ("A", 2)))[0]["position"]
            assert feed.stats.published_position < first  # nothing acknowledged, nothing moved
            assert FeedCursor(recorder, FEED_NAME).load() < first
            broker.down = False
            _wait(lambda: feed.stats.published_position == last, "the feed to catch up")
            assert broker.producers_built >= 2  # a failed producer is dropped and built anew
            # Warned of once while the broker was down, not once a round; then told it is over.
            said = [record.getMessage() for record in caplog.records if record.name == "ledger.feed"]
            failed = feed.stats.rounds_failed
            assert failed >= 2
            assert sum("could not publish" in line for line in said) == 1, said
            assert f"the availability feed publishes again, after {failed} failed rounds" in said, said
            assert FeedCursor(recorder, FEED_NAME).load() == last
            records = [decode_record(value) for _, value in broker.kept]
            assert {r.sku for r in records} == set("ABCDEFG")
            last_a = [r for r in records if r.sku == "A"][-1]
            assert (last_a.position, last_a.on_hand_units) == (last, 3)
            assert feed.stats.lag_positions == 0
            # A store's default policy reaches its seven SKUs in pages of three, then the round ends.
            api.put_policy(client, store, "*", {"safety_stock": 1, "channels": {}})
            changed = api.level(client, store, "A")["position"]
            _wait(lambda: feed.stats.published_position == changed, "the default's records")
            after = [decode_record(value) for _, value in broker.kept[len(records) :]]
            assert [(r.sku, r.position, r.safety_stock_units) for r in after] == [
                (sku, changed, 1) for sku in "ABCDEFG"
            ]
    finally:
        feed.stop()
        thread.join(DEADLINE_S)
        recorder.close()


def _metrics(feed: LevelsFeed) -> dict[str, float]:
    return {family.name: family.samples[0].value for family in feed.collector.collect()}


def test_a_round_refused_for_good_is_never_skipped_and_says_so(database_url, serve, caplog):
    server = serve(database_url)
    store = unique("shop")
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap="unused:9092",
        feed_poll_ms=10,
        feed_retry_backoff_ms_max=20,
    )
    broker = _Broker()
    broker.down = False
    broker.topic_missing = True
    broker.too_large_sku = "BIG"
    recorder = open_recorder(database_url, 2, 30)
    feed = LevelsFeed(recorder, settings, broker.producer)
    thread = threading.Thread(target=feed.run, daemon=True)
    caplog.set_level("WARNING", logger="ledger.feed")

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "for good" in r.getMessage()]

    thread.start()
    try:
        with server.client() as client:
            first = api.record(client, ev.receipt(store, ("A", 1)))[0]["position"]
            big = api.record(client, ev.receipt(store, ("BIG", 1)))[0]["position"]
            _wait(lambda: feed.stats.refusals >= 3, "refusals of a missing topic")
            assert _metrics(feed)["ledger_feed_stuck"] == 1
            assert feed.stats.published_position < first
            [missing] = refusals()  # one warning for many refusals of one kind
            assert "UnknownTopicOrPartitionError" in missing
            # The topic is made: the record too large stops the round, and nothing after it moves.
            broker.topic_missing = False
            _wait(lambda: len(refusals()) == 2, "the warning of a record too large")
            assert f"store {store}, SKU BIG at position {big}" in refusals()[1]
            after = api.record(client, ev.receipt(store, ("C", 1)))[0]["position"]
            refused_so_far = feed.stats.refusals
            _wait(lambda: feed.stats.refusals >= refused_so_far + 3, "more refusals")
            assert len(refusals()) == 2
            assert feed.stats.published_position < first
            assert FeedCursor(recorder, FEED_NAME).load() < first
            metrics = _metrics(feed)
            assert metrics["ledger_feed_stuck"] == 1
            assert metrics["ledger_feed_refusals"] == feed.stats.refusals >= 6
            # The topic takes it now: the feed goes on from where it stood, every record published.
            broker.too_large_sku = None
            _wait(lambda: feed.stats.published_position == after, "the feed to go on")
            assert _metrics(feed)["ledger_feed_stuck"] == 0
            published = {(r.sku, r.position) for r in (decode_record(v) for _, v in broker.kept)}
            assert {("A", first), ("BIG", big), ("C", after)} <= published
    finally:
        feed.stop()
        thread.join(DEADLINE_S)
        recorder.close()


class _SilentBroker:
    """A broker that takes records and never answers: a producer's close waits its whole timeout
    for it, as librdkafka's does."""

    def __init__(self) -> None:
        self.sent = threading.Event()

    def producer(self, _: Settings) -> Any:
        broker = self

        class Producer:
            def send(self, topic: str, key: bytes, value: bytes) -> Any:
                broker.sent.set()
                future = _Future(None)
                future.is_done = False
                return future

            def flush(self, timeout: float) -> None:
                time.sleep(timeout)

            def close(self, timeout: float) -> None:
                time.sleep(timeout)

        return Producer()


def test_a_shutdown_is_not_held_up_by_a_broker_that_never_answers(database_url, serve):
    server = serve(database_url)
    silent_close_s = 2 * DEADLINE_S  # what a close that waited for the broker would take
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap="unused:9092",
        feed_poll_ms=10,
        feed_publish_timeout_s=silent_close_s,
        kafka_shutdown_timeout_s=silent_close_s,
    )
    broker = _SilentBroker()
    recorder = open_recorder(database_url, 2, 30)
    feed = LevelsFeed(recorder, settings, broker.producer)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    try:
        with server.client() as client:
            api.record(client, ev.receipt(unique("shop"), ("A", 1)))
        assert broker.sent.wait(DEADLINE_S), "the feed sent nothing"
        feed.stop()
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "the feed's shutdown waited for a broker that never answers"
        assert FeedCursor(recorder, FEED_NAME).load() == 0  # nothing acknowledged, nothing saved
    finally:
        feed.stop()
        thread.join(silent_close_s)
        recorder.close()


def test_a_second_publisher_waits_while_the_first_holds_the_feed(database_url, serve):
    server = serve(database_url)
    settings = Settings(
        database_url=database_url, kafka_bootstrap="unused:9092", feed_poll_ms=10, feed_takeover_ms=20
    )
    brokers = [_Broker(), _Broker()]
    for broker in brokers:
        broker.down = False
    recorder = open_recorder(database_url, 2, 30)
    feeds = [LevelsFeed(recorder, settings, broker.producer) for broker in brokers]
    threads = [threading.Thread(target=feed.run, daemon=True) for feed in feeds]
    for thread in threads:
        thread.start()
    try:
        with server.client() as client:
            position = api.record(client, ev.receipt(unique("shop"), ("A", 1)))[0]["position"]
            _wait(lambda: any(feed.stats.published_position == position for feed in feeds), "a publisher")
            assert sum(feed.stats.publishing for feed in feeds) == 1
            leader = next(index for index, feed in enumerate(feeds) if feed.stats.publishing)
            assert brokers[1 - leader].kept == []
            feeds[leader].stop()
            threads[leader].join(DEADLINE_S)
            later = api.record(client, ev.receipt(unique("shop"), ("B", 1)))[0]["position"]
            follower = feeds[1 - leader]
            _wait(lambda: follower.stats.published_position == later, "the other to take over")
            # It goes on from the position the first saved: the first record is not published again.
            assert [decode_record(v).position for _, v in brokers[1 - leader].kept] == [later]
    finally:
        for feed in feeds:
            feed.stop()
        for thread in threads:
            thread.join(DEADLINE_S)
        recorder.close()


def test_a_batch_that_failed_publishes_nothing(database_url: str, monkeypatch: Any) -> None:
    poison.install(monkeypatch.setattr)
    ledger = build_ledger(Settings(database_url=database_url))
    ledger.start()
    broker = _Broker()
    broker.down = False
    settings = Settings(database_url=database_url, kafka_bootstrap="unused:9092", feed_poll_ms=10)
    feed = LevelsFeed(ledger.recorder, settings, broker.producer)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    try:
        store = unique("shop")
        with pytest.raises(SubmissionFailed):
            ledger.submit_and_wait(
                [
                    ev.stock_event("good-1", "stock.receipt", store, [("LOST", 5)]),
                    ev.stock_event(f"{poison.POISON}1", "stock.receipt", store, [("LOST", 1)]),
                ]
            )
        [marker] = ledger.submit_and_wait([ev.stock_event("good-2", "stock.receipt", store, [("KEPT", 1)])])
        _wait(lambda: feed.stats.published_position == marker.position, "the feed to publish the marker")
        assert [(r.sku, r.position) for r in map(decode_record, (v for _, v in broker.kept))] == [
            ("KEPT", marker.position)
        ]
    finally:
        feed.stop()
        thread.join(DEADLINE_S)
        ledger.stop()


def test_a_frozen_database_cannot_hold_the_feeds_thread_in_a_leadership_query(postgres):
    """The session that holds the feed's lock stops answering (its backend stopped, as a frozen
    server would): the check that the lock is still held gives up, and counts it lost."""
    database_url = postgres.create_database()
    leadership = AdvisoryLeadership(database_url, FEED_NAME)
    assert leadership.try_take()
    with psycopg.connect(database_url, autocommit=True) as look:
        [(holder,)] = look.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    answers: list[bool] = []
    checking = threading.Thread(target=lambda: answers.append(leadership.still_held()), daemon=True)
    os.kill(holder, signal.SIGSTOP)
    try:
        checking.start()
        checking.join(DEADLINE_S)
        assert answers == [False], "the leadership check waited on a database that never answers"
    finally:
        os.kill(holder, signal.SIGCONT)
        checking.join(DEADLINE_S)
        leadership.release()


class _SlowBroker:
    """A producer's stand-in whose acknowledgements wait for `answer`: a record is on the topic once
    acknowledged (sent before, it would still be in the producer's queue). Closing the producer
    drops what it has not acknowledged."""

    def __init__(self, topic: list[bytes], answer: threading.Event | None) -> None:
        self.topic = topic
        self.answer = answer

    def producer(self, _: Settings) -> Any:
        broker = self
        queued: list[_SlowFuture] = []

        class Producer:
            def send(self, topic: str, key: bytes, value: bytes) -> _SlowFuture:
                future = _SlowFuture()
                queued.append(future)
                future.value = value
                return future

            def flush(self, timeout: float) -> None:
                if broker.answer is None or broker.answer.is_set():
                    for future in queued:
                        broker.topic.append(future.value)
                        future.is_done = True
                    queued.clear()
                else:
                    time.sleep(0.01)

            def close(self, timeout: float) -> None:
                queued.clear()

        return Producer()


class _SlowFuture:
    def __init__(self) -> None:
        self.is_done = False
        self.exception = None
        self.value = b""

    def failed(self) -> bool:
        return False


def test_a_publisher_that_loses_the_feed_mid_round_neither_publishes_nor_saves_after_its_successor(
    postgres, serve
):
    """The leader's database session ends while it waits for the broker (the network, a restart, an
    idle timeout): the lock goes with it, and another instance takes over. The first must not land its
    round after the second's newer records, nor move the saved position back."""
    database_url = postgres.create_database()
    server = serve(database_url)
    settings = Settings(
        database_url=database_url, kafka_bootstrap="unused:9092", feed_poll_ms=10, feed_takeover_ms=20
    )
    topic: list[bytes] = []
    answer = threading.Event()  # the first leader's broker acknowledges only once this is set
    recorder = open_recorder(database_url, 2, 30)
    first = LevelsFeed(recorder, settings, _SlowBroker(topic, answer).producer)
    second = LevelsFeed(recorder, settings, _SlowBroker(topic, None).producer)
    threads = [threading.Thread(target=feed.run, daemon=True) for feed in (first, second)]
    store = unique("shop")
    try:
        with server.client() as client:
            received = api.record(client, ev.receipt(store, ("A", 1)))[0]["position"]
            threads[0].start()
            _wait(
                lambda: first.stats.publishing and first.stats.head_position >= received, "the first to lead"
            )
            time.sleep(0.3)  # its round is sent and waits for the broker
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            threads[1].start()
            _wait(lambda: second.stats.published_position == received, "the second to take over")
            newer = api.record(client, ev.receipt(store, ("A", 5)))[0]["position"]
            _wait(lambda: second.stats.published_position == newer, "the second to publish the newer figures")
            answer.set()  # the first one's broker answers now
            _wait(lambda: not first.stats.publishing, "the first to see it lost the feed")
            level = api.level(client, store, "A")
        positions = [decode_record(value).position for value in topic]
        assert positions == sorted(positions), positions
        assert decode_record(topic[-1]).on_hand_units == level["on_hand"] == 6
        assert FeedCursor(recorder, FEED_NAME).load() == newer
    finally:
        answer.set()
        for feed in (first, second):
            feed.stop()
        for thread in threads:
            thread.join(DEADLINE_S)
        recorder.close()


def test_a_saved_feed_position_never_goes_back(database_url):
    recorder = open_recorder(database_url, 2, 30)
    try:
        cursor = FeedCursor(recorder, FEED_NAME)
        cursor.save(7)
        cursor.save(5)  # a publisher that lost the feed, saving late
        assert cursor.load() == 7
        cursor.save(9)
        assert cursor.load() == 9
    finally:
        recorder.close()


class _LateBroker:
    """A broker slower than the feed's publish timeout and quicker than the producer's delivery
    timeout: it writes each record as it arrives and acknowledges it `ack_after_s` later. A record
    on the wire is written whether or not its producer was closed meanwhile (librdkafka's purge
    only stops waiting for it). With `silent_producers`, the first producers built never answer."""

    def __init__(self, ack_after_s: float, silent_producers: int = 0) -> None:
        self.ack_after_s = ack_after_s
        self.silent_producers = silent_producers
        self.kept: list[bytes] = []
        self.sent_at_s: list[float] = []  # when each producer built sent its first record
        self.lock = threading.Lock()

    def producer(self, _: Settings) -> Any:
        broker = self
        silent = len(self.sent_at_s) < self.silent_producers
        self.sent_at_s.append(0.0)
        built = len(self.sent_at_s) - 1

        class Producer:
            def send(self, topic: str, key: bytes, value: bytes) -> _Future:
                future = _Future(None)
                future.is_done = False
                with broker.lock:
                    broker.kept.append(value)
                    broker.sent_at_s[built] = broker.sent_at_s[built] or time.monotonic()
                if not silent:
                    acknowledge = threading.Timer(broker.ack_after_s, setattr, [future, "is_done", True])
                    acknowledge.daemon = True
                    acknowledge.start()
                return future

            def flush(self, timeout: float) -> None:
                time.sleep(min(timeout, 0.01))

            def close(self, timeout: float) -> None:
                pass

        return Producer()


def test_a_round_acknowledged_after_the_publish_timeout_but_within_the_delivery_timeout_is_sent_once(
    database_url, serve, caplog
):
    """The feed took a round not acknowledged within its publish timeout for failed and sent it
    again, while the producer still delivered the first copies: a broker slower than that timeout
    got every round twice or more, and as every copy was late, the feed never moved on (found by
    review). A round now waits for the producer's verdict; the wait is said, not counted failed."""
    caplog.set_level(logging.WARNING, logger="ledger.feed")
    server = serve(database_url)
    store = unique("shop")
    publish_timeout_s = 0.2
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap="unused:9092",
        feed_poll_ms=10,
        feed_rows_per_round_max=3,
        feed_publish_timeout_s=publish_timeout_s,
        feed_retry_backoff_ms_max=50,
    )
    broker = _LateBroker(ack_after_s=5 * publish_timeout_s)
    recorder = open_recorder(database_url, 2, 30)
    feed = LevelsFeed(recorder, settings, broker.producer)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    try:
        with server.client() as client:
            for sku in "ABCDE":
                api.record(client, ev.receipt(store, (sku, 1)))
            last = api.record(client, ev.sale(store, ("A", 1)))[0]["position"]
            _wait(lambda: feed.stats.published_position == last, "the feed to publish every round")
            published = Counter((r.sku, r.position) for r in map(decode_record, broker.kept))
            assert set(published.values()) == {1}, f"a record published more than once: {published}"
            assert feed.stats.rounds_failed == 0
            assert len(broker.sent_at_s) == 1  # one producer: none was dropped for being slow
            # The wait shows while it lasts, and ends with the acknowledgement.
            later = api.record(client, ev.receipt(store, ("F", 1)))[0]["position"]
            _wait(
                lambda: _metrics(feed)["ledger_feed_unacknowledged_seconds"] > publish_timeout_s,
                "the round's wait for the broker to show",
            )
            _wait(lambda: feed.stats.published_position == later, "the feed to publish the later round")
            assert _metrics(feed)["ledger_feed_unacknowledged_seconds"] == 0
        late = [r.getMessage() for r in caplog.records if "has not acknowledged" in r.getMessage()]
        assert len(late) == 1, late  # said at once, then at most once a minute
    finally:
        feed.stop()
        thread.join(DEADLINE_S)
        recorder.close()


def test_a_round_whose_producer_never_answers_is_published_again_after_the_backstop(
    database_url, serve, monkeypatch
):
    """Should the producer never give its verdict, the round is published again by a new producer
    once the producer's delivery timeout and the publish timeout have passed, not before."""
    delivery_timeout_ms = 600
    monkeypatch.setattr(kafka_producer, "DELIVERY_TIMEOUT_MS", delivery_timeout_ms)
    server = serve(database_url)
    publish_timeout_s = 0.2
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap="unused:9092",
        feed_poll_ms=10,
        feed_publish_timeout_s=publish_timeout_s,
        feed_retry_backoff_ms_max=50,
    )
    broker = _LateBroker(ack_after_s=0.0, silent_producers=1)
    recorder = open_recorder(database_url, 2, 30)
    feed = LevelsFeed(recorder, settings, broker.producer)
    thread = threading.Thread(target=feed.run, daemon=True)
    thread.start()
    try:
        with server.client() as client:
            position = api.record(client, ev.receipt(unique("shop"), ("A", 1)))[0]["position"]
        _wait(lambda: feed.stats.published_position == position, "the feed to publish the round again")
        assert feed.stats.rounds_failed == 1
        assert len(broker.sent_at_s) == 2
        waited_s = broker.sent_at_s[1] - broker.sent_at_s[0]
        assert waited_s >= delivery_timeout_ms / 1000 + publish_timeout_s, waited_s
    finally:
        feed.stop()
        thread.join(DEADLINE_S)
        recorder.close()
