"""A replay of some stores (ledger/rebuild/replay.py, `Replay(Stores(...))`), as `ledger rebuild`
runs one in each process of its fill, makes with the others exactly the rows and state that one
replay of every store makes: on random logs, for every split of their stores, one or two other
parts, pages of 1 to 5 entries (events cross pages).

The logs hold events of one entry, transfers (two: half of them stored in format 1, with no
`event_entries_after`), reservations across 2 to 4 stores, refused releases without lines,
policies set and cleared, and a SKU named `event_entries_after` (its stored bytes look like an
entry with entries after it)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import orjson

from ledger.domain.model import EventType, Line, Policy, StockEvent
from ledger.domain.rules import LedgerState, apply, decide, reservation_entry
from ledger.projections.tables import (
    LatestRows,
    _history_rows,
    _key_rows,
    _level_rows,
    _policy_rows,
    _reservation_row,
)
from ledger.rebuild.replay import Replay, Stores
from ledger.storage.codec import encode
from ledger.storage.recorders import LogEntry

SEEDS = 120
EVENTS_MAX = 60
TIME = datetime(2024, 1, 1, tzinfo=UTC)


class _Log:
    """The recorder's `log_page`, over a list."""

    def __init__(self, entries: list[LogEntry]) -> None:
        self.entries = entries

    def log_page(self, after: int, stop: int, limit: int) -> list[LogEntry]:
        return [entry for entry in self.entries if after < entry[0] <= stop][:limit]


def _event(name: str, type_: EventType, store: str, lines, **fields) -> StockEvent:
    return StockEvent(name, "src", type_, TIME, store, tuple(Line(sku, qty) for sku, qty in lines), **fields)


def _random_log(rng: random.Random, stores: list[str]) -> list[LogEntry]:
    state = LedgerState()
    log: list[LogEntry] = []
    versions = dict.fromkeys(stores, 0)

    def record(entries, first_format: bool = False) -> None:
        position = len(log) + len(entries)
        for index, entry in enumerate(entries):
            versions[entry.store_id] += 1
            stored = encode(entry, versions[entry.store_id], "2024-01-01T00:00:00Z", len(entries) - 1 - index)
            state_bytes = stored.state
            if first_format:
                written = orjson.loads(state_bytes)
                written["v"] = 1
                written.pop("event_entries_after", None)
                state_bytes = orjson.dumps(written)
            log.append((len(log) + 1, entry.store_id, stored.topic, state_bytes))
        for entry in entries:
            apply(entry, state, position)

    for number in range(rng.randint(5, EVENTS_MAX)):
        store, sku, kind = rng.choice(stores), rng.choice("AB"), rng.random()
        one_line = ((sku, rng.randint(1, 3)),)
        name = f"e{number}"
        if kind < 0.25:
            record(decide(_event(name, EventType.RECEIPT, store, ((sku, 5),)), state).entries)
        elif kind < 0.35:
            record(decide(_event(name, EventType.SALE, store, one_line), state).entries)
        elif kind < 0.5:
            to_store = rng.choice([other for other in stores if other != store])
            transfer = _event(name, EventType.TRANSFER, store, one_line, to_store=to_store, transfer_id=name)
            entries = decide(transfer, state).entries
            record(entries, first_format=len(entries) == 2 and rng.random() < 0.5)
        elif kind < 0.65:
            at = rng.sample(stores, rng.randint(2, len(stores)))
            parts = [
                _event(name, EventType.RESERVATION, part, ((sku, 1),), reservation_id=name) for part in at
            ]
            record([reservation_entry(part) for part in parts])
        elif kind < 0.72:
            release = _event(name, EventType.RESERVATION_RELEASE, store, (), reservation_id="nobody")
            record(decide(release, state).entries)
        elif kind < 0.8:
            policy = Policy(rng.randint(0, 2)) if rng.random() < 0.7 else None
            record(
                decide(
                    _event(name, EventType.POLICY_CHANGED, store, ((sku, 0),), policy=policy), state
                ).entries
            )
        elif kind < 0.9:
            reserve = _event(name, EventType.RESERVATION, store, ((sku, 1),), reservation_id=name)
            record(decide(reserve, state).entries)
        else:
            record(
                decide(_event(name, EventType.RECEIPT, store, (("event_entries_after", 1),)), state).entries
            )
    return log


def _rows(replays_pages) -> tuple[list[object], ...]:
    """What a fill writes of these pages: history, keys, and the last levels, reservations and
    policies, each sorted (the parts write theirs apart)."""
    history: list[object] = []
    keys: list[object] = []
    latest = LatestRows()
    for pages in replays_pages:
        for page in pages:
            history += _history_rows(page.batch)
            keys += _key_rows(page.batch)
            latest.merge(page.batch)
    reservations = [_reservation_row(held, position) for held, position in latest.reservations.values()]
    return tuple(
        sorted(rows, key=repr)
        for rows in (history, keys, _level_rows(latest.levels), reservations, _policy_rows(latest.policies))
    )


def test_the_replays_of_some_stores_make_what_one_replay_of_every_store_makes():
    splits = 0
    for seed in range(SEEDS):
        rng = random.Random(seed)
        stores = ["s1", "s2", "s3", "s4"][: rng.randint(2, 4)]
        log = _Log(_random_log(rng, stores))
        head, page_entries = log.entries[-1][0], rng.randint(1, 5)
        whole = Replay()
        expected = _rows([list(whole.pages(log, head, page_entries))])
        for count in range(1, len(stores)):
            for others in itertools.combinations(stores, count):
                parts = [frozenset(others)]
                if len(others) > 1 and rng.random() < 0.5:
                    parts = [frozenset(others[:1]), frozenset(others[1:])]
                own = Replay(Stores(frozenset(others), but=True))
                theirs = [Replay(Stores(part)) for part in parts]
                got = _rows(
                    [list(own.pages(log, head, page_entries))]
                    + [list(replay.pages(log, head, page_entries)) for replay in theirs]
                )
                assert got == expected, (seed, others)
                own.join(replay.state for replay in theirs)
                assert own.stores is None and own.position == head
                assert own.state.levels == whole.state.levels, (seed, others)
                assert own.state.reservations == whole.state.reservations, (seed, others)
                assert own.state.policies == whole.state.policies, (seed, others)
                splits += 1
    assert splits > SEEDS  # every seed had at least one split, most several
