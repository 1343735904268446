"""The availability feed on a real broker (CONTRACT §9), from `ledger serve` on SQLite and
PostgreSQL: two instances on one database take a mixed load (every event type, channels, policies,
refusals), one of them stops half-way; then the last record of every store and SKU equals its REST
level, a store's records keep position order in one partition, and no refused event has a record."""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import orjson
from kafka.admin import KafkaAdminClient, NewTopic
from kafka_harness import HEARTBEAT_MS, SESSION_TIMEOUT_MS, Broker, TopicReader, wait_until
from support import api
from support import events as ev
from support.ids import unique

from ledger.feed.record import LevelRecord, decode_record, encode_record

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "stock-levels-record.schema.json").read_text()
)
VALIDATOR = jsonschema_rs.validator_for(SCHEMA, validate_formats=True)
LEVELS_PARTITIONS = 3
SKUS = ("A", "B", "C", "D")
FIGURES = ("on_hand", "reserved", "available", "incoming", "safety_stock", "sellable", "channels")
STEPS_PER_CLIENT = 40
FEED_DEADLINE_S = 90


def _feed_env(broker: Broker, name: str) -> tuple[dict[str, str], str]:
    topics = broker.new_topics(name, partitions=2)
    levels = f"{topics.events}.levels"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(levels, LEVELS_PARTITIONS, 1)])
    finally:
        admin.close()
    env = {
        "LEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
        "LEDGER_KAFKA_TOPIC": topics.events,
        "LEDGER_KAFKA_RESULTS_TOPIC": topics.results,
        "LEDGER_KAFKA_DLQ_TOPIC": topics.dlq,
        "LEDGER_KAFKA_GROUP": topics.group,
        "LEDGER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "LEDGER_KAFKA_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_MS),
        "LEDGER_KAFKA_LEVELS_TOPIC": levels,
        "LEDGER_FEED_POLL_MS": "20",
        "LEDGER_FEED_TAKEOVER_MS": "200",
        "LEDGER_FEED_ROWS_PER_ROUND_MAX": "40",  # many rounds, so that order across rounds is tested
    }
    return env, levels


def _mixed_load(client: httpx.Client, stores: list[str], seed: int, steps: int) -> list[dict[str, Any]]:
    """Random events of every kind over the stores and SKUs; returns every result."""
    rng = random.Random(seed)
    results: list[dict[str, Any]] = []
    open_reservations: list[tuple[str, str]] = []
    for step in range(steps):
        store = rng.choice(stores)
        sku = rng.choice(SKUS)
        qty = rng.randint(1, 6)
        kind = rng.randrange(10)
        if kind == 0:
            policy = {
                "safety_stock": rng.randint(0, 3),
                "channels": {"online": {"quota_pct": rng.choice((30, 50))}},
            }
            api.put_policy(client, store, rng.choice((sku, "*")), policy)
            continue
        if kind == 1 and open_reservations:
            at, reservation_id = open_reservations.pop(rng.randrange(len(open_reservations)))
            envelope = rng.choice(
                (ev.release(at, reservation_id), ev.shipment(at, (sku, 1), reservation_id=reservation_id))
            )
        elif kind in (2, 3):
            reservation_id = f"R-{seed}-{step}"
            channel = {"channel": "online"} if rng.random() < 0.6 else {}
            envelope = ev.reservation(store, reservation_id, (sku, qty), **channel)
            open_reservations.append((store, reservation_id))
        elif kind == 4:
            envelope = ev.sale(store, (sku, qty), **({"channel": "online"} if rng.random() < 0.5 else {}))
        elif kind == 5:
            envelope = ev.pos_sale(store, (sku, qty))
        elif kind == 6:
            to = rng.choice([s for s in stores if s != store])
            envelope = ev.transfer(store, to, f"T-{seed}-{step}", (sku, qty))
        elif kind == 7:
            envelope = ev.count(store, (sku, rng.randint(0, 20)))
        elif kind == 8:
            envelope = ev.adjustment(store, "damage", (sku, -qty))
        else:
            envelope = ev.receipt(store, (sku, qty * 3), (rng.choice(SKUS), qty))
            if envelope["data"]["lines"][0]["sku"] == envelope["data"]["lines"][1]["sku"]:
                envelope["data"]["lines"].pop()
        results.extend(api.post_events(client, envelope))
    return results


def _figures(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in FIGURES}


def _record_body(record: LevelRecord) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(encode_record(record))
    return body


def test_the_feed_ends_at_the_rest_levels_in_position_order_across_instances(database_url, serve, broker):
    env, levels_topic = _feed_env(broker, "feed")
    first, second = serve(database_url, env), serve(database_url, env)
    stores = [unique("shop"), unique("shop"), unique("wh")]
    results: list[dict[str, Any]] = []
    with first.client() as a, second.client() as b:
        for store in stores:  # every store and SKU has a level, so every one has a record
            results += api.record(a, ev.receipt(store, *[(sku, 20) for sku in SKUS]))

        def load(client: httpx.Client, seed: int) -> None:
            results.extend(_mixed_load(client, stores, seed, STEPS_PER_CLIENT))

        threads = [threading.Thread(target=load, args=(c, seed)) for seed, c in ((1, a), (2, b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    first.stop()  # whichever instance published, the other goes on (from the saved position)
    with second.client() as b:
        results += _mixed_load(b, stores, 3, STEPS_PER_CLIENT)
        head = max(r["position"] for r in results if r.get("position") is not None)
        rest = {
            (store, sku): _figures(api.level(b, store, sku, min_position=head))
            for store in stores
            for sku in SKUS
        }
    refused = {r["position"] for r in results if r["outcome"] == "rejected"}
    assert refused, "the load should include refused events"

    reader = TopicReader(broker.bootstrap, levels_topic, LEVELS_PARTITIONS)
    try:

        def last_records_match(records: list[Any]) -> bool:
            last: dict[tuple[str, str], dict[str, Any]] = {}
            for message in records:
                record = decode_record(message.value)
                if record.store_id in stores:
                    last[(record.store_id, record.sku)] = _figures(_record_body(record))
            return last == rest

        messages = reader.read_until(last_records_match, FEED_DEADLINE_S, "the feed to reach the REST levels")
    finally:
        reader.close()

    by_store: dict[str, list[tuple[int, int, str]]] = defaultdict(list)  # (partition, position, sku)
    for message in messages:
        record = decode_record(message.value)
        VALIDATOR.validate(json.loads(message.value))  # schemas/stock-levels-record.schema.json
        assert message.key == record.store_id.encode(), message
        by_store[record.store_id].append((message.partition, record.position, record.sku))
        assert record.position not in refused, f"a record for a refused event: {record}"
    for store, seen in by_store.items():
        assert len({partition for partition, _, _ in seen}) == 1, f"{store}'s records in several partitions"
        # At least once (CONTRACT §9): a round the broker did not acknowledge in time is published
        # again from its start, so a store's positions may step back, but only to records already
        # published; the first time each record appears, positions are in order.
        published: set[tuple[int, str]] = set()
        first_times: list[tuple[int, str]] = []
        highest = 0
        for _, position, sku in seen:
            if position < highest:
                assert (position, sku) in published, f"{store}: {sku}@{position} after {highest}, never seen"
            elif (position, sku) not in published:
                first_times.append((position, sku))
            published.add((position, sku))
            highest = max(highest, position)
        positions = [position for position, _ in first_times]
        assert positions == sorted(positions), f"{store}'s records out of position order: {positions}"
        per_sku: dict[str, list[int]] = defaultdict(list)
        for position, sku in first_times:
            per_sku[sku].append(position)
        for sku, sku_positions in per_sku.items():
            assert all(x < y for x, y in itertools.pairwise(sku_positions)), (store, sku, sku_positions)


def _feed_metrics(server: Any) -> dict[str, float]:
    with server.client() as client:
        text = client.get("/metrics").text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("ledger_feed_") and not line.startswith("#")
    }


def test_the_feed_is_off_without_kafka_and_when_turned_off(database_url, serve, broker):
    env, _ = _feed_env(broker, "off")
    without_kafka = serve(database_url)
    assert _feed_metrics(without_kafka) == {}
    turned_off = serve(database_url, {**env, "LEDGER_FEED_ENABLED": "false"})
    assert _feed_metrics(turned_off) == {}
    with turned_off.client() as client:
        position = api.record(client, ev.receipt(unique("shop"), ("A", 1)))[0]["position"]
    publishing = serve(database_url, env)

    def published() -> dict[str, float]:
        metrics = _feed_metrics(publishing)
        return metrics if metrics.get("ledger_feed_position") == position else {}

    metrics = wait_until(published, FEED_DEADLINE_S, "the feed to publish")
    assert metrics["ledger_feed_publishing"] == 1 and metrics["ledger_feed_lag_positions"] == 0


def test_after_the_publisher_is_killed_another_instance_takes_over_and_nothing_is_lost(
    database_url, serve, broker
):
    env, levels_topic = _feed_env(broker, "kill")
    # The first instance looks for commits only every 10 s, so that it is killed with a lag.
    first = serve(database_url, {**env, "LEDGER_FEED_POLL_MS": "10000"})
    stores = [unique("shop"), unique("wh")]
    with first.client() as a:
        for store in stores:
            api.record(a, ev.receipt(store, *[(sku, 20) for sku in SKUS]))
        _mixed_load(a, stores, 4, STEPS_PER_CLIENT)
    first.kill()  # kill -9: its lock goes with it
    second = serve(database_url, env)
    with second.client() as b:
        # One more write: every other store and SKU's newest figures are the first instance's,
        # which only the saved position leads the second to.
        head = api.record(b, ev.receipt(stores[0], ("A", 1)))[0]["position"]
        rest = {
            (store, sku): _figures(api.level(b, store, sku, min_position=head))
            for store in stores
            for sku in SKUS
        }
    reader = TopicReader(broker.bootstrap, levels_topic, LEVELS_PARTITIONS)
    try:

        def newest_match(records: list[Any]) -> bool:
            # As a consumer keeps them (README): per store and SKU, the record of the highest position.
            newest: dict[tuple[str, str], LevelRecord] = {}
            for message in records:
                record = decode_record(message.value)
                key = (record.store_id, record.sku)
                if record.store_id in stores and (
                    key not in newest or record.position >= newest[key].position
                ):
                    newest[key] = record
            return {key: _figures(_record_body(r)) for key, r in newest.items()} == rest

        reader.read_until(newest_match, FEED_DEADLINE_S, "the feed to reach the REST levels after the kill")
    finally:
        reader.close()


def test_a_feed_whose_topic_is_missing_stands_still_and_says_so_until_it_is_made(database_url, serve, broker):
    """The ledger never makes a topic: without it the feed is stuck (shown on /metrics), not
    skipping anything, and goes on from where it stood once the operator makes the topic."""
    env, levels = _feed_env(broker, "missing")
    missing = f"{levels}.later"
    # librdkafka fails a send to a missing topic only after it waited 30 s for the topic to appear:
    # the feed must ask about the topic itself, or a missing one would look like a slow broker.
    overrides = {"LEDGER_KAFKA_LEVELS_TOPIC": missing, "LEDGER_FEED_RETRY_BACKOFF_MS_MAX": "100"}
    server = serve(database_url, {**env, **overrides})
    with server.client() as client:
        position = api.record(client, ev.receipt(unique("shop"), ("A", 1)))[0]["position"]

    def refused() -> dict[str, float]:
        metrics = _feed_metrics(server)
        return metrics if metrics.get("ledger_feed_refusals_total", 0) >= 2 else {}

    metrics = wait_until(refused, FEED_DEADLINE_S, "the feed to be refused")
    assert metrics["ledger_feed_stuck"] == 1 and metrics["ledger_feed_position"] < position
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert missing not in admin.list_topics()  # asking about it made no topic
        admin.create_topics([NewTopic(missing, 1, 1)])
    finally:
        admin.close()

    def published() -> dict[str, float]:
        metrics = _feed_metrics(server)
        return metrics if metrics.get("ledger_feed_position") == position else {}

    assert wait_until(published, FEED_DEADLINE_S, "the feed to go on")["ledger_feed_stuck"] == 0
    reader = TopicReader(broker.bootstrap, missing, 1)
    try:
        records = reader.read_until(lambda got: len(got) >= 1, FEED_DEADLINE_S, "the record")
    finally:
        reader.close()
    assert [decode_record(r.value).position for r in records] == [position]
