"""What must hold after load: answers as the contract says, everything acknowledged recorded once,
and levels that equal the sums of the history."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from kafka_harness import Broker, Sent, TopicReader, Topics, result_bodies, wait_until
from support.api import history

from production.load import PROBLEM_JSON, Acknowledged, Answer, Catalogue, effective

PRODUCER_TYPES = {
    "stock.receipt",
    "stock.sale",
    "stock.pos_sale",
    "stock.reservation",
    "stock.reservation_release",
    "stock.shipment",
    "stock.return",
    "stock.adjustment",
    "stock.count",
    "stock.transfer",
}
READ_TIMEOUT_S = 60.0
SHOWN_MAX = 5


def describe(answers: Iterable[Answer]) -> str:
    shown = list(answers)[:SHOWN_MAX]
    return "\n".join(f"  {a.what}: status {a.status} error {a.error} body {str(a.body)[:300]}" for a in shown)


def check_answers(
    answers: list[Answer], *, expected: set[int], transport_errors_allowed: bool
) -> Counter[str]:
    """Every answer has an expected status; a 503 is problem+json with Retry-After; nothing hung
    past the request timeout, and no keep-alive connection was dropped after an answer. Returns
    the count of each status, for the failure messages of the caller's own assertions."""
    hung = [a for a in answers if a.error is not None and a.error.startswith("hung")]
    assert not hung, f"{len(hung)} requests hung past the request timeout:\n{describe(hung)}"
    dropped = [a for a in answers if a.connection_dropped]
    assert not dropped, f"{len(dropped)} answers dropped their keep-alive connection:\n{describe(dropped)}"
    if not transport_errors_allowed:
        failed = [a for a in answers if a.status is None]
        assert not failed, f"{len(failed)} requests failed:\n{describe(failed)}"
    unexpected = [a for a in answers if a.status is not None and a.status not in expected]
    assert not unexpected, f"{len(unexpected)} unexpected answers:\n{describe(unexpected)}"
    for answer in answers:
        if answer.status == 503:
            assert answer.content_type == PROBLEM_JSON, (
                f"a 503 that is not problem+json:\n{describe([answer])}"
            )
            assert answer.body["status"] == 503 and answer.body["type"], describe([answer])
            assert answer.retry_after is not None and answer.retry_after.isdigit(), (
                f"a 503 without Retry-After (seconds):\n{describe([answer])}"
            )
    return Counter("no answer" if a.status is None else str(a.status) for a in answers)


@dataclass
class LedgerContents:
    """Every history entry of the catalogue's stores, and their levels, read over HTTP."""

    entries: dict[str, list[dict[str, Any]]]
    levels: dict[tuple[str, str], tuple[int, int, int]]

    def event_positions(self) -> dict[tuple[str, str], set[int]]:
        """Per producer event (source, id), the positions it was recorded at (one, if at all)."""
        found: dict[tuple[str, str], set[int]] = defaultdict(set)
        for store_entries in self.entries.values():
            for entry in store_entries:
                if entry["type"] in PRODUCER_TYPES:
                    found[(entry["source"], entry["event_id"])].add(int(entry["position"]))
        return found

    def reservation_positions(self) -> dict[tuple[str, str], set[int]]:
        found: dict[tuple[str, str], set[int]] = defaultdict(set)
        for store, store_entries in self.entries.items():
            for entry in store_entries:
                if entry["type"] == "stock.reservation" and entry["outcome"] == "accepted":
                    found[(store, entry["reservation_id"])].add(int(entry["position"]))
        return found

    def sums(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for store, store_entries in self.entries.items():
            for entry in store_entries:
                if entry["sku"] is None:
                    continue
                total = totals[(store, entry["sku"])]
                total[0] += entry["on_hand_delta"]
                total[1] += entry["reserved_delta"]
                total[2] += entry["incoming_delta"]
        return {key: (total[0], total[1], total[2]) for key, total in totals.items()}


def read_ledger(url: str, catalogue: Catalogue) -> LedgerContents:
    with httpx.Client(base_url=url, timeout=READ_TIMEOUT_S) as client:
        entries = {store: history(client, store) for store in catalogue.stores}
        head = max((int(e["position"]) for found in entries.values() for e in found), default=0)
        levels = {}
        for store in catalogue.stores:
            # min_position: an HTTP worker's memory may not have heard of the last commits yet.
            params: list[tuple[str, str | int]] = [("sku", sku) for sku in catalogue.skus]
            response = client.get(f"/v1/stores/{store}/stock", params=[*params, ("min_position", head)])
            assert response.status_code == 200, response.text
            for item in response.json()["items"]:
                levels[(store, item["sku"])] = (item["on_hand"], item["reserved"], item["incoming"])
    return LedgerContents(entries, levels)


def check_levels_are_history_sums(contents: LedgerContents) -> None:
    sums = contents.sums()
    wrong = {
        key: (level, sums.get(key, (0, 0, 0)))
        for key, level in contents.levels.items()
        if level != sums.get(key, (0, 0, 0))
    }
    assert not wrong, f"levels (on_hand, reserved, incoming) that differ from the history's sums: {wrong}"


def check_recorded_once(contents: LedgerContents, acknowledged: Acknowledged) -> None:
    """No event is in the history twice; every acknowledged one is there, at its position."""
    positions = contents.event_positions()
    doubled = {key: found for key, found in positions.items() if len(found) > 1}
    assert not doubled, f"events recorded more than once: {dict(list(doubled.items())[:SHOWN_MAX])}"
    missing = {}
    for key, (outcome, position) in acknowledged.events.items():
        if outcome in ("accepted", "rejected") and positions.get(key) != {position}:
            missing[key] = (outcome, position, positions.get(key))
    assert not missing, (
        f"{len(missing)} of {len(acknowledged.events)} acknowledged events are not in the history "
        f"at their position (outcome, answered position, found): {dict(list(missing.items())[:SHOWN_MAX])}"
    )
    placed = contents.reservation_positions()
    lost = {}
    for key, position in acknowledged.reservations.items():
        found = placed.get(key, set())
        if len(found) != 1 or (position is not None and found != {position}):
            lost[key] = (position, found)
    assert not lost, (
        f"acknowledged reservations not placed exactly once: {dict(list(lost.items())[:SHOWN_MAX])}"
    )


def check_kafka_results(
    results: list[dict[str, Any]],
    sent: Iterable[tuple[str, str]],
    uncertain: Iterable[tuple[str, str]],
    *,
    exactly_once: bool,
    first_results_kept: bool = False,
) -> Acknowledged:
    """Every event the broker took has a result, and the results of one event agree. exactly_once:
    one result each (after a crash or an outage a result may be published again, as a duplicate
    of the first). first_results_kept: each event's first result is among them, the one that says
    what became of it the first time (not only a duplicate of it). Returns what was acknowledged."""
    by_event: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for body in results:
        by_event[(body["source"], body["id"])].append(body)
    without = [key for key in sent if key not in by_event]
    assert not without, f"{len(without)} events sent to Kafka have no result, e.g. {without[:SHOWN_MAX]}"
    if exactly_once:
        repeated = {key: found for key, found in by_event.items() if len(found) > 1}
        assert not repeated, (
            f"{len(repeated)} events have more than one result, e.g. {list(repeated.items())[:2]}"
        )
    if first_results_kept:
        only_duplicates = {
            key: found for key, found in by_event.items() if all(b["outcome"] == "duplicate" for b in found)
        }
        assert not only_duplicates, (
            f"{len(only_duplicates)} first-time events were answered only as duplicates (their first "
            f"result was not published), e.g. {list(only_duplicates.items())[:2]}"
        )
    acknowledged = Acknowledged()
    known = set(sent) | set(uncertain)
    for key, found in by_event.items():
        assert key in known, f"a result for an event nobody sent: {found}"
        outcomes = {effective(body) for body in found}
        assert len(outcomes) == 1, f"the results of {key} disagree: {found}"
        acknowledged.note_results(found[:1])
    return acknowledged


# After the group has committed every offset, how long to go on reading for results published twice.
LATE_RESULTS_S = 2.0


def read_results(
    broker: Broker, topics: Topics, sent: dict[tuple[str, str], Sent], deadline_s: float
) -> list[dict[str, Any]]:
    """The results topic, once every event sent has a result and the intake's group has committed
    every offset sent (and LATE_RESULTS_S more, to catch a result published twice)."""
    reader = TopicReader(broker.bootstrap, topics.results, topics.partitions)
    expected = set(sent)
    try:
        reader.read_until(
            lambda records: expected <= {(b["source"], b["id"]) for b in result_bodies(records)},
            deadline_s,
            f"a result for each of the {len(expected)} events sent to Kafka",
        )
        wait_until(
            lambda: broker.caught_up(topics, sent.values()), deadline_s, "the intake to commit every offset"
        )
        end = time.monotonic() + LATE_RESULTS_S
        reader.read_until(lambda _: time.monotonic() > end, LATE_RESULTS_S * 5, "late results")
        return result_bodies(reader.records)
    finally:
        reader.close()
