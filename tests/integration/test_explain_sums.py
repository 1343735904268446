"""Explain adds up (CONTRACT §8): over random sequences recorded through the real ledger, the
explanation of every store and SKU equals the stock answer's figures (the policy's too: safety stock,
sellable and each channel's quota, reserved and sellable), its sums hold, and it matches what the
reference model (tests/support/reference_ledger.py: CONTRACT §1 and §6 in plain dicts) implies.

The sequences hold counts, transfers and their receipts, reservations (under channels or none)
shipped, released and expired, sales under channels, and policies set and cleared (a SKU's own and
the store's default, with quotas in units and in percent of on_hand).

One in-process ledger per database (SQLite, PostgreSQL) serves every example of the property: each
example has stores of its own. Every explanation's open reservations must also come from the index
of reservation lines, trusted and equal to a scan of the store's reservations, and the index must be
the reservations' lines (tests/integration/test_explain_reservation_lines.py has the details).

Expiry is driven by hand (the writer's own `expire_due`, at a clock of the test's), with
reservations that expire centuries from now, so the writer thread never expires one by itself.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import events as ev
from support.postgres import EmbeddedPostgres
from support.reference_ledger import ReferenceLedger, as_policy
from support.reservation_lines import assert_index_is_the_reservations

from ledger.api.explain import explanation_public
from ledger.api.schemas import level_public
from ledger.bootstrap import build_ledger
from ledger.clock import utc_now
from ledger.config import Settings
from ledger.domain.model import DEFAULT_SKU, EventType, Line, StockEvent
from ledger.projections.explain import explain, indexed_holds, open_reservations_scanned
from ledger.service import Ledger
from ledger.writer.facade import Writer
from ledger.writer.thread import ThreadWriterClient

SKUS = ("A", "B", "C")
RESERVATION_IDS = ("R1", "R2", "R3")
TRANSFER_IDS = ("T1", "T2")
CHANNELS = ("online", "web")
SOURCE = "tests/explain"
# Far past any real clock: only the test's own expire steps expire these reservations.
CLOCK_START = datetime(2200, 1, 1, tzinfo=UTC)
EXAMPLE_HOURS = 1000  # each example's clock starts this much after the previous one's
LEDGER_SETTINGS = {"expiry_interval_ms": 10**9, "expiry_batch_max": 10_000}
_examples = itertools.count()


# --- the reference: the model decides, and §8's decomposition is kept beside it -----------------


class Reference:
    """The reference model decides every event and keeps the levels, reservations and policies;
    beside it, what explain decomposes: the last count, the on_hand moves since it by type, the
    transfers on their way, and each reservation's expiry (the model has no clock)."""

    def __init__(self) -> None:
        self.model = ReferenceLedger()
        self.counts: dict[tuple[str, str], int] = {}
        self.since: dict[tuple[str, str], dict[str, list[int]]] = {}  # type -> [units, entries]
        # (to_store, sku) -> {transfer_id: [remaining, from_store]}
        self.transfers: dict[tuple[str, str], dict[str, list[Any]]] = {}
        self.expires_at: dict[tuple[str, str], datetime | None] = {}

    def handle(self, step: dict[str, Any]) -> None:
        kind, store = step["kind"], step["store"]
        if kind == "policy":
            event = {"type": "policy_changed", "store": store, "lines": [(step["key"], 0)], **step}
            self.model.handle(event)
            return
        expected = self.model.handle({**step, "type": kind})
        if expected.outcome != "accepted":
            return
        if kind == "reservation":
            self.expires_at[(store, step["reservation_id"])] = step.get("expires_at")
        for effect_store, effects in expected.effects.items():
            for effect in effects:
                self._note(kind, step, effect_store, effect)

    def _note(self, kind: str, step: dict[str, Any], store: str, effect: dict[str, Any]) -> None:
        key = (store, effect["sku"])
        if kind == "count":
            self.counts[key] = effect["qty"]
            self.since[key] = {}
        elif effect["on_hand"]:
            group = self.since.setdefault(key, {}).setdefault(f"stock.{kind}", [0, 0])
            group[0] += effect["on_hand"]
            group[1] += 1
        if effect["incoming"]:
            transfer = self.transfers.setdefault(key, {}).setdefault(step["transfer_id"], [0, None])
            transfer[0] += effect["incoming"]
            if kind == "transfer":
                transfer[1] = transfer[1] or step["store"]

    def expire(self, now: datetime) -> None:
        for (store, reservation_id), expires_at in self.expires_at.items():
            held = self.model.reservations[(store, reservation_id)]
            still_held = any(self.model.remaining(line) for line in held["lines"].values())
            if expires_at is not None and expires_at <= now and still_held:
                self.model.handle(
                    {"type": "expire", "store": store, "reservation_id": reservation_id, "lines": []}
                )

    def explanation(self, store: str, sku: str) -> dict[str, Any]:
        level = self.model.level(store, sku)
        on_hand, reserved, incoming = level["on_hand"], level["reserved"], level["incoming"]
        safety_stock, sellable, channels = self.model.figures(store, sku)
        holds = []
        for (res_store, reservation_id), held in self.model.reservations.items():  # in placement order
            line = held["lines"].get(sku)
            remaining = self.model.remaining(line) if line else 0
            if res_store == store and remaining > 0:
                expires_at = self.expires_at[(store, reservation_id)]
                holds.append((reservation_id, held["order_id"], held["channel"], remaining, expires_at))
        return {
            "figures": (on_hand, reserved, on_hand - reserved, incoming),
            "policy": (safety_stock, sellable, channels),
            "count": self.counts.get((store, sku)),
            "since": sorted((t, units, n) for t, (units, n) in self.since.get((store, sku), {}).items() if n),
            "reserved_by": holds,
            "incoming_from": sorted(
                (transfer_id, from_store, remaining)
                for transfer_id, (remaining, from_store) in self.transfers.get((store, sku), {}).items()
                if remaining
            ),
        }


# --- random sequences ----------------------------------------------------------------------------

KINDS = (
    "receipt",
    "receipt",
    "sale",
    "pos_sale",
    "count",
    "adjustment",
    "return",
    "transfer",
    "transfer",
    "reservation",
    "reservation",
    "reservation",
    "reservation_release",
    "shipment",
    "shipment",
    "expire",
    "policy",
    "policy",
)

# In the reference model's form: {"safety_stock": N, "channels": {name: ("pct" | "units", N)}}.
quota_policies = st.fixed_dictionaries(
    {
        "safety_stock": st.sampled_from([0, 1, 2]),
        "channels": st.dictionaries(
            st.sampled_from(CHANNELS),
            st.one_of(
                st.tuples(st.just("units"), st.integers(0, 5)),
                st.tuples(st.just("pct"), st.sampled_from([0, 30, 50, 100])),
            ),
            min_size=1,
            max_size=2,
        ),
    }
)
policies = st.one_of(
    st.none(),
    st.fixed_dictionaries({"safety_stock": st.integers(0, 3), "channels": st.just({})}),
    quota_policies,
)


def line_lists(qty: st.SearchStrategy[int], min_size: int = 1) -> st.SearchStrategy[list[tuple[str, int]]]:
    return st.lists(
        st.tuples(st.sampled_from(SKUS), qty), min_size=min_size, max_size=3, unique_by=lambda x: x[0]
    )


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    step: dict[str, Any] = {"kind": kind, "store": draw(st.sampled_from(("s1", "s2")))}
    if kind == "expire":
        step["advance_h"] = draw(st.integers(0, 4))
        return step
    step["together"] = draw(st.booleans())  # recorded in one submission with the next step
    if kind == "policy":
        step["key"] = draw(st.sampled_from((*SKUS, DEFAULT_SKU)))
        step["policy"] = draw(policies)
        return step
    qty = {
        "receipt": st.integers(1, 12),
        "return": st.integers(1, 5),
        "adjustment": st.integers(-4, 4).filter(bool),
        "count": st.integers(0, 10),
    }.get(kind, st.integers(1, 4))
    step["lines"] = draw(line_lists(qty, min_size=0 if kind == "reservation_release" else 1))
    # A channel limits reservations and sales; on any other type it is kept and limits nothing.
    step["channel"] = draw(st.sampled_from((None, None, *CHANNELS)))
    if kind == "receipt":
        step["transfer_id"] = draw(st.sampled_from((None, None, *TRANSFER_IDS)))
    elif kind == "transfer":
        step["to_store"] = "s2" if step["store"] == "s1" else "s1"
        step["transfer_id"] = draw(st.sampled_from(TRANSFER_IDS))
    elif kind == "adjustment":
        step["reason"] = "damage"
    elif kind in ("reservation", "reservation_release", "shipment"):
        step["reservation_id"] = draw(
            st.sampled_from(RESERVATION_IDS if kind != "shipment" else (None, *RESERVATION_IDS))
        )
        if kind == "reservation":
            step["order_id"] = f"order-{step['reservation_id']}"  # a retry never differs in order_id
            step["expires_in_h"] = draw(st.sampled_from((None, 1, 2, 3, 5)))
    return step


@st.composite
def plans(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Half the plans open with stock everywhere and a store default with quotas, so that
    reservations and sales run into the channels' figures; then random steps."""
    opening: list[dict[str, Any]] = []
    if draw(st.booleans()):
        for store in ("s1", "s2"):
            opening.append({"kind": "receipt", "store": store, "lines": [(sku, 8) for sku in SKUS]})
            policy = draw(quota_policies)
            opening.append({"kind": "policy", "store": store, "key": DEFAULT_SKU, "policy": policy})
    return [{"together": False, **step} for step in opening] + draw(
        st.lists(steps(), min_size=5, max_size=40)
    )


# --- recording through the real ledger -----------------------------------------------------------


def _writer(ledger: Ledger) -> Writer:
    assert isinstance(ledger.writer, ThreadWriterClient)
    return ledger.writer.writer


def start_ledger(database_url: str) -> Ledger:
    ledger = build_ledger(Settings(database_url=database_url, **LEDGER_SETTINGS))
    ledger.start()
    # The writer thread looks for due reservations once, after its first batch; after the second
    # batch it is waiting for work, and this test drives expiry itself.
    for warm_up in ("warm-1", "warm-2"):
        ledger.submit_and_wait(
            [ev.stock_event(warm_up, "stock.receipt", "warm-up", [("A", 1)], source=SOURCE)]
        )
    return ledger


class Run:
    """One example: its steps recorded in the ledger and applied to the reference, side by side."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.number = next(_examples)
        self.clock = CLOCK_START + timedelta(hours=EXAMPLE_HOURS * self.number)
        self.reference = Reference()
        self.pending: list[Any] = []
        self.events = itertools.count()

    def store(self, name: str) -> str:
        return f"x{self.number}-{name}"

    def play(self, plan: list[dict[str, Any]]) -> None:
        for planned in plan:
            step = dict(planned)
            if step["kind"] == "expire":
                self.flush()
                self.clock += timedelta(hours=step["advance_h"])
                while _writer(self.ledger).expire_due(self.clock):
                    pass
                self.reference.expire(self.clock)
                continue
            if step.get("expires_in_h"):
                step["expires_at"] = self.clock + timedelta(hours=step["expires_in_h"])
            self.pending.append(self.event(step))
            self.reference.handle(step)
            if not step.get("together"):
                self.flush()
        self.flush()

    def event(self, step: dict[str, Any]) -> Any:
        event_id = f"x{self.number}-{next(self.events)}"
        if step["kind"] == "policy":  # as PUT /v1/stores/{store}/policies/{sku} records it
            return StockEvent(
                event_id=event_id,
                source=SOURCE,
                type=EventType.POLICY_CHANGED,
                time=utc_now(),
                store_id=self.store(step["store"]),
                lines=(Line(step["key"], 0),),
                policy=as_policy(step["policy"]),
            )
        data = {
            key: step[key]
            for key in ("reservation_id", "order_id", "transfer_id", "reason", "channel")
            if step.get(key)
        }
        if step.get("to_store"):
            data["to_store"] = self.store(step["to_store"])
        if step.get("expires_at"):
            data["expires_at"] = step["expires_at"].isoformat()
        return ev.stock_event(
            event_id, f"stock.{step['kind']}", self.store(step["store"]), step["lines"], source=SOURCE, **data
        )

    def flush(self) -> None:
        if self.pending:
            self.ledger.submit_and_wait(self.pending)
            self.pending = []

    def check(self) -> None:
        for store, sku in itertools.product(("s1", "s2"), (*SKUS, "NEVER-SEEN")):
            explained = explanation_public(self.ledger.explain(self.store(store), sku, items_max=100))
            [view] = self.ledger.levels(self.store(store), [sku])
            assert explained["position"] == view.position
            assert_adds_up(explained, level_public(view))
            assert_matches(explained, self.reference.explanation(store, sku), self.store)
        self.check_the_index()

    def check_the_index(self) -> None:
        recorder = self.ledger.recorder
        with recorder.snapshot_transaction() as tx:
            assert_index_is_the_reservations(tx)
            for store, sku in itertools.product(("s1", "s2"), SKUS):
                explained = explain(tx, self.store(store), sku, recorder.head(tx), 100)
                from_index = indexed_holds(tx, self.store(store), sku, explained.level, 100)
                assert from_index == explained.reserved_by, (store, sku)
                assert from_index == open_reservations_scanned(tx, self.store(store), sku, 100)


STOCK_FIGURES = ("on_hand", "reserved", "available", "incoming", "safety_stock", "sellable", "channels")


def assert_adds_up(explained: dict[str, Any], stock: dict[str, Any]) -> None:
    """Every figure is the stock answer's, and §8's and §6's sums hold."""
    assert {name: explained[name] for name in STOCK_FIGURES} == {name: stock[name] for name in STOCK_FIGURES}
    count, since = explained["on_hand_from"]["count"], explained["on_hand_from"]["since"]
    holds = explained["reserved_by"]
    assert explained["on_hand"] == (count["qty"] if count else 0) + sum(group["units"] for group in since)
    assert explained["reserved"] == sum(hold["remaining"] for hold in holds)
    assert explained["incoming"] == sum(transfer["remaining"] for transfer in explained["incoming_from"])
    assert explained["available"] == explained["on_hand"] - explained["reserved"]
    assert explained["sellable"] == explained["available"] - explained["safety_stock"]
    for channel, shown in explained["channels"].items():
        assert shown["reserved"] == sum(hold["remaining"] for hold in holds if hold["channel"] == channel)
        assert shown["sellable"] == min(explained["sellable"], shown["quota"] - shown["reserved"])


def assert_matches(explained: dict[str, Any], expected: dict[str, Any], store_id: Any) -> None:
    figures = (explained["on_hand"], explained["reserved"], explained["available"], explained["incoming"])
    assert figures == expected["figures"]
    channels = {
        name: (shown["quota"], shown["reserved"], shown["sellable"])
        for name, shown in explained["channels"].items()
    }
    assert (explained["safety_stock"], explained["sellable"], channels) == expected["policy"]
    count = explained["on_hand_from"]["count"]
    assert (count["qty"] if count else None) == expected["count"]
    since = [
        (group["type"], group["units"], group["entries"]) for group in explained["on_hand_from"]["since"]
    ]
    assert since == expected["since"]
    holds = [
        (
            hold["reservation_id"],
            hold["order_id"],
            hold["channel"],
            hold["remaining"],
            datetime.fromisoformat(hold["expires_at"]) if hold["expires_at"] else None,
        )
        for hold in explained["reserved_by"]
    ]
    assert holds == expected["reserved_by"]
    transfers = [(t["transfer_id"], t["from_store"], t["remaining"]) for t in explained["incoming_from"]]
    assert transfers == [
        (transfer_id, store_id(from_store) if from_store else None, remaining)
        for transfer_id, from_store, remaining in expected["incoming_from"]
    ]


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def each_ledger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    if request.param == "postgres":
        pg: EmbeddedPostgres = request.getfixturevalue("postgres")
        database_url = pg.create_database("explain_property")
    else:
        path: Path = tmp_path_factory.mktemp("explain") / "ledger.db"
        database_url = f"sqlite:///{path}"
    ledger = start_ledger(database_url)
    try:
        yield ledger
    finally:
        ledger.stop()


# Shrinking a failure records many sequences again: a few minutes, past the suite's default timeout.
@pytest.mark.timeout(900)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans())
def test_every_explanation_adds_up_to_the_stock_answer_and_matches_the_reference(
    each_ledger: Ledger, plan: list[dict[str, Any]]
) -> None:
    run = Run(each_ledger)
    run.play(plan)
    run.check()


# A hand-written sequence with every kind of entry: counts, transfers both ways and their receipts,
# reservations shipped, released and expired; then a store default with quotas and a reservation
# under one of its channels.
EXAMPLE = [
    {"kind": "receipt", "store": "s1", "lines": [("A", 10), ("B", 4)]},
    {"kind": "receipt", "store": "s2", "lines": [("A", 6)], "together": True},
    {"kind": "pos_sale", "store": "s1", "lines": [("A", 1)]},
    {"kind": "count", "store": "s1", "lines": [("A", 8)]},
    {"kind": "sale", "store": "s1", "lines": [("A", 2)], "together": True},
    {"kind": "adjustment", "store": "s1", "lines": [("A", -1)], "reason": "damage"},
    {"kind": "return", "store": "s1", "lines": [("A", 1)]},
    {
        "kind": "reservation",
        "store": "s1",
        "reservation_id": "R1",
        "order_id": "order-R1",
        "lines": [("A", 2), ("B", 1)],
        "expires_in_h": 1,
    },
    {
        "kind": "reservation",
        "store": "s1",
        "reservation_id": "R2",
        "order_id": "order-R2",
        "lines": [("A", 1)],
    },
    {"kind": "reservation", "store": "s1", "reservation_id": "R3", "lines": [("A", 99)]},  # refused
    {"kind": "shipment", "store": "s1", "reservation_id": "R2", "lines": [("A", 1)]},
    {"kind": "transfer", "store": "s2", "to_store": "s1", "transfer_id": "T1", "lines": [("A", 3)]},
    {"kind": "transfer", "store": "s2", "to_store": "s1", "transfer_id": "T2", "lines": [("A", 2)]},
    {"kind": "transfer", "store": "s1", "to_store": "s2", "transfer_id": "T1", "lines": [("B", 1)]},
    {"kind": "receipt", "store": "s1", "transfer_id": "T1", "lines": [("A", 3)]},
    {"kind": "receipt", "store": "s1", "transfer_id": "T2", "lines": [("A", 1)]},
    {"kind": "expire", "store": "s1", "advance_h": 2},
    {"kind": "reservation", "store": "s2", "reservation_id": "R1", "lines": [("A", 1)]},
    {"kind": "reservation_release", "store": "s2", "reservation_id": "R1", "lines": []},
    {"kind": "count", "store": "s2", "lines": [("B", 0)]},
    {
        "kind": "policy",
        "store": "s1",
        "key": DEFAULT_SKU,
        "policy": {"safety_stock": 1, "channels": {"online": ("units", 2), "web": ("pct", 50)}},
    },
    {"kind": "reservation", "store": "s1", "reservation_id": "R4", "lines": [("B", 1)], "channel": "online"},
]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_sequence_of_every_kind_is_explained_on_both_databases(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "postgres":
        pg: EmbeddedPostgres = request.getfixturevalue("postgres")
        database_url = pg.create_database("explain")
    else:
        database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = start_ledger(database_url)
    try:
        run = Run(ledger)
        run.play([{"together": False, **step} for step in EXAMPLE])
        run.check()
        explained = explanation_public(ledger.explain(run.store("s1"), "A", items_max=100))
        explained_b = explanation_public(ledger.explain(run.store("s1"), "B", items_max=100))
    finally:
        ledger.stop()
    # By hand: on_hand 8 counted, then -2 sold, -1 damaged, +1 returned, -1 shipped, +4 received.
    assert explained["on_hand_from"]["count"]["qty"] == 8
    assert [(g["type"], g["units"], g["entries"]) for g in explained["on_hand_from"]["since"]] == [
        ("stock.adjustment", -1, 1),
        ("stock.receipt", 4, 2),
        ("stock.return", 1, 1),
        ("stock.sale", -2, 1),
        ("stock.shipment", -1, 1),
    ]
    assert explained["on_hand"] == 9 and explained["reserved_by"] == []  # R1 expired, R2 shipped
    assert explained["incoming_from"] == [
        {"transfer_id": "T2", "from_store": run.store("s2"), "remaining": 1}
    ]
    # B: 4 received, 1 sent to s2, 1 reserved under `online`; a safety stock of 1, and quotas of
    # 2 units (online) and 50% of on_hand (web: floor(3 x 50 / 100) = 1).
    assert (explained_b["on_hand"], explained_b["reserved"], explained_b["sellable"]) == (3, 1, 1)
    assert explained_b["channels"] == {
        "online": {"quota": 2, "reserved": 1, "sellable": 1},
        "web": {"quota": 1, "reserved": 0, "sellable": 1},
    }
    assert [(h["reservation_id"], h["channel"], h["remaining"]) for h in explained_b["reserved_by"]] == [
        ("R4", "online", 1)
    ]


WRITE_ROUNDS = 150
READS_MAX = 5000  # the reader's bound, should the writer stall


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_explanation_read_while_others_write_still_adds_up(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every figure of one answer comes from one snapshot: read statement by statement while
    batches change on_hand, reserved and incoming together, the sums would not hold (explain
    asserts them, so a torn read raises)."""
    if kind == "postgres":
        pg: EmbeddedPostgres = request.getfixturevalue("postgres")
        database_url = pg.create_database("explain_race")
    else:
        database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = start_ledger(database_url)
    shop, warehouse = "shop", "warehouse"
    done = threading.Event()
    failures: list[BaseException] = []

    def event(n: int, type_: str, store: str, lines: list[tuple[str, int]], **data: Any) -> Any:
        return ev.stock_event(f"race-{n}-{type_}", type_, store, lines, source=SOURCE, **data)

    def write() -> None:
        try:
            ledger.submit_and_wait([event(0, "stock.receipt", warehouse, [("A", 10 * WRITE_ROUNDS)])])
            for n in range(1, WRITE_ROUNDS + 1):
                batch = [
                    event(n, "stock.receipt", shop, [("A", 2)], transfer_id=f"T{n - 1}"),
                    event(n, "stock.reservation", shop, [("A", 1)], reservation_id=f"R{n}"),
                    event(n, "stock.reservation_release", shop, [], reservation_id=f"R{n - 1}"),
                    event(n, "stock.pos_sale", shop, [("A", 1)]),
                    event(n, "stock.transfer", warehouse, [("A", 3)], to_store=shop, transfer_id=f"T{n}"),
                ]
                if n % 10 == 0:
                    batch.append(event(n, "stock.count", shop, [("A", n)]))
                ledger.submit_and_wait(batch)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=write, name="explain-race-writer")
    writer.start()
    reads = 0
    try:
        while not done.is_set() and reads < READS_MAX:
            ledger.explain(shop, "A", items_max=1000)  # asserts its sums
            reads += 1
    finally:
        writer.join(timeout=120)
        ledger.stop()
    assert not failures, failures
    assert reads > 0
