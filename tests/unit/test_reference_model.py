"""A property test that the stock rules agree with the reference model of CONTRACT §1 and §6
(tests/support/reference_ledger.py): random event sequences (policies set and cleared among them,
reservations and sales under channels) run through both, and after every step the outcomes, reasons,
shortfalls, deltas, flags, levels, reservation statuses and every stock figure (safety_stock,
sellable, each channel's quota, reserved and sellable) must be the same.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.reference_ledger import (
    EVENT_TIME,
    UNKNOWN_RESERVATION_ID,
    Expected,
    ReferenceLedger,
    as_policy,
)

from ledger.domain.model import DEFAULT_SKU, EventType, Line, StockEvent
from ledger.domain.policy import figures
from ledger.domain.rules import Decision, LedgerState, apply, decide, expire

STORES = ("s1", "s2")
SKUS = ("A", "B", "C")
RESERVATION_IDS = ("R1", "R2", "R3")
CHANNELS = ("online", "web")
POLICY_KEYS = (*SKUS, DEFAULT_SKU)
QTY_ABS_MAX = 1_000_000_000


# --- random event sequences ------------------------------------------------------------------

supply_qty = st.one_of(st.integers(1, 12), st.just(QTY_ABS_MAX))
demand_qty = st.one_of(st.integers(1, 4), st.sampled_from([1, 2, QTY_ABS_MAX]))
signed_qty = st.one_of(st.integers(-4, 4).filter(bool), st.sampled_from([-QTY_ABS_MAX, QTY_ABS_MAX]))
counted_qty = st.one_of(st.integers(0, 10), st.just(QTY_ABS_MAX))
QTY_BY_KIND = {"receipt": supply_qty, "return": supply_qty, "adjustment": signed_qty, "count": counted_qty}
KINDS = (
    "receipt",
    "sale",
    "pos_sale",
    "reservation",
    "reservation",
    "reserve_again",
    "reservation_release",
    "reservation_release",
    "shipment",
    "shipment",
    "shipment",
    "return",
    "adjustment",
    "count",
    "transfer",
    "expire",
    "policy_changed",
    "policy_changed",
)

quota_plans = st.fixed_dictionaries(
    {
        "safety_stock": st.sampled_from([0, 1]),
        "channels": st.fixed_dictionaries(
            {"online": st.tuples(st.just("units"), st.integers(1, 4))},
            optional={"web": st.tuples(st.just("pct"), st.sampled_from([30, 50]))},
        ),
    }
)
policy_plans = st.one_of(
    st.none(),
    quota_plans,
    st.fixed_dictionaries(
        {
            "safety_stock": st.sampled_from([0, 1, 2, 4]),
            "channels": st.dictionaries(
                st.sampled_from(CHANNELS),
                st.one_of(
                    st.tuples(st.just("pct"), st.sampled_from([0, 30, 50, 100])),
                    st.tuples(st.just("units"), st.integers(0, 5)),
                ),
                max_size=2,
            ),
        }
    ),
)


def line_lists(qty: st.SearchStrategy[int]) -> st.SearchStrategy[list[tuple[str, int]]]:
    return st.lists(
        st.tuples(st.sampled_from(SKUS), qty), min_size=1, max_size=3, unique_by=lambda line: line[0]
    )


store_ids = st.sampled_from(STORES)
reservation_ids = st.sampled_from(RESERVATION_IDS)


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    store = draw(store_ids)
    step: dict[str, Any] = {"type": kind, "store": store}
    if kind in ("reserve_again", "expire"):
        step["pick"] = draw(st.integers(0, 50))
        return step
    if kind == "policy_changed":
        step["lines"] = [(draw(st.sampled_from(POLICY_KEYS)), 0)]
        step["policy"] = draw(policy_plans)
        return step
    step["lines"] = draw(line_lists(QTY_BY_KIND.get(kind, demand_qty)))
    # A channel limits reservations and sales only; on other types it is carried and ignored.
    step["channel"] = draw(st.sampled_from([None, *CHANNELS, "online"]))
    if kind == "receipt":
        step["transfer_id"] = draw(st.sampled_from([None, None, "T1"]))
    elif kind == "reservation":
        step["reservation_id"] = draw(reservation_ids)
        # one order per reservation id, so a retry never differs in order_id
        step["order_id"] = draw(st.sampled_from([None, f"order-{step['reservation_id']}"]))
    elif kind == "reservation_release":
        step["reservation_id"] = draw(st.sampled_from((*RESERVATION_IDS, UNKNOWN_RESERVATION_ID)))
        step["target"] = draw(st.sampled_from(["given", "known", "known"]))
        step["line_plan"] = draw(st.sampled_from(["none", "none", "random", "part", "all"]))
        step["part"] = draw(st.integers(1, 3))
        step["pick"] = draw(st.integers(0, 50))
    elif kind == "shipment":
        step["reservation_id"] = draw(st.sampled_from((None, *RESERVATION_IDS, UNKNOWN_RESERVATION_ID)))
        step["target"] = draw(st.sampled_from(["given", "known", "known"]))
        step["line_plan"] = draw(st.sampled_from(["random", "part", "all"]))
        step["part"] = draw(st.integers(1, 3))
        step["pick"] = draw(st.integers(0, 50))
    elif kind == "transfer":
        step["to_store"] = draw(store_ids.filter(lambda s: s != store))
        step["transfer_id"] = "T1"
    elif kind == "adjustment":
        step["reason"] = "damage"
    return step


@st.composite
def plans(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Opening stock everywhere or none (so reservations and sales get accepted), then random steps."""
    opening_units = draw(st.sampled_from([0, 3, 10]))
    opening = (
        [
            {"type": "receipt", "store": store, "lines": [(sku, opening_units) for sku in SKUS]}
            for store in STORES
        ]
        if opening_units
        else []
    )
    # Half the plans start with a store default that has quotas, so that channels run into them.
    policies = [
        {"type": "policy_changed", "store": store, "lines": [(DEFAULT_SKU, 0)], "policy": draw(quota_plans)}
        for store in STORES
        if draw(st.booleans())
    ]
    return opening + policies + draw(st.lists(steps(), min_size=10, max_size=60))


def stock_event(step: dict[str, Any], number: int) -> StockEvent:
    return StockEvent(
        event_id=f"e{number}",
        source="tests/reference",
        type=EventType(f"stock.{step['type']}"),
        time=EVENT_TIME,
        store_id=step["store"],
        lines=tuple(Line(sku, qty) for sku, qty in step["lines"]),
        order_id=step.get("order_id"),
        reservation_id=step.get("reservation_id"),
        transfer_id=step.get("transfer_id"),
        to_store=step.get("to_store"),
        reason=step.get("reason"),
        channel=step.get("channel"),
        policy=as_policy(step.get("policy")),
    )


# --- comparing the rules with the model ------------------------------------------------------


def effects_by_store(decision: Decision) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in decision.entries:
        assert entry.store_id not in out, "one entry per store"
        out[entry.store_id] = [
            {
                "sku": e.sku,
                "qty": e.qty_units,
                "on_hand": e.on_hand_delta,
                "reserved": e.reserved_delta,
                "incoming": e.incoming_delta,
                "oversold": e.oversold,
                "unknown_reservation": e.unknown_reservation,
            }
            for e in entry.effects
        ]
    return out


def without_zero_lines(effects: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    return {
        e["sku"]: (e["on_hand"], e["reserved"], e["incoming"])
        for e in effects
        if (e["on_hand"], e["reserved"], e["incoming"]) != (0, 0, 0)
    }


def assert_same_decision(decision: Decision, expected: Expected, step: dict[str, Any]) -> None:
    if expected.outcome == "duplicate":
        assert decision.entries == ()
        assert decision.duplicate_of_position == expected.duplicate_of
        return
    assert decision.duplicate_of_position is None
    outcomes = {entry.outcome.value for entry in decision.entries}
    assert outcomes == {expected.outcome}
    (first,) = (entry for entry in decision.entries if entry.store_id == step["store"])
    assert (first.reason.value if first.reason else None) == expected.reason
    assert [(s.sku, s.requested_units, s.available_units) for s in first.shortfall] == expected.shortfall
    actual = effects_by_store(decision)
    assert actual.keys() == expected.effects.keys()
    default_release = step["type"] in ("reservation_release", "expire") and not step.get("lines")
    for store, expected_effects in expected.effects.items():
        if default_release and expected.outcome == "accepted":
            # the contract does not say which zero lines a release of "everything" lists
            assert without_zero_lines(actual[store]) == without_zero_lines(expected_effects)
            assert not any(e["oversold"] or e["unknown_reservation"] for e in actual[store])
        else:
            assert actual[store] == expected_effects


def level_snapshot(state: LedgerState) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {
        key: (lv.on_hand_units, lv.reserved_units, lv.incoming_units)
        for key, lv in state.levels.items()
        if (lv.on_hand_units, lv.reserved_units, lv.incoming_units) != (0, 0, 0)
    }


def reservation_snapshot(state: LedgerState) -> dict[tuple[str, str], Any]:
    return {
        key: (
            res.status,
            {sku: (ln.qty_units, ln.shipped_units, ln.released_units) for sku, ln in res.lines.items()},
        )
        for key, res in state.reservations.items()
    }


def assert_same_state(state: LedgerState, model: ReferenceLedger) -> None:
    for store, sku in itertools.product(STORES, SKUS):
        level = state.levels.get((store, sku))
        actual = (
            (level.on_hand_units, level.reserved_units, level.available_units, level.incoming_units)
            if level
            else (0, 0, 0, 0)
        )
        ref = model.level(store, sku)
        assert actual == (
            ref["on_hand"],
            ref["reserved"],
            ref["on_hand"] - ref["reserved"],
            ref["incoming"],
        ), (store, sku)
        # invariants: reserved is never negative, and is exactly what open reservations still hold
        assert actual[1] >= 0
        held_units = sum(
            line.remaining_units
            for (res_store, _), res in state.reservations.items()
            if res_store == store
            for s, line in res.lines.items()
            if s == sku
        )
        assert actual[1] == held_units
        # every figure of a stock answer (CONTRACT §6)
        shown = figures(level or state.level(store, sku), state.policy(store, sku))
        channels = {
            name: (c.quota_units, c.reserved_units, c.sellable_units) for name, c in shown.channels.items()
        }
        assert (shown.safety_stock_units, shown.sellable_units, channels) == model.figures(store, sku)
        for channel in CHANNELS:
            assert (level or state.level(store, sku)).channel_reserved_units(
                channel
            ) == model.channel_reserved(store, sku, channel), (store, sku, channel)
    assert state.reservations.keys() == model.reservations.keys()
    for (store, reservation_id), res in state.reservations.items():
        ref = model.reservations[(store, reservation_id)]
        assert res.channel == ref["channel"]
        assert res.order_id == ref["order_id"]
        assert res.placed_at_position == ref["position"]
        assert {
            sku: (ln.qty_units, ln.shipped_units, ln.released_units) for sku, ln in res.lines.items()
        } == {sku: (ln["qty"], ln["shipped"], ln["released"]) for sku, ln in ref["lines"].items()}
        assert res.status.value == model.status(store, reservation_id), (store, reservation_id)


def aim_at_a_known_reservation(step: dict[str, Any], model: ReferenceLedger) -> None:
    """Points a release or shipment at a reservation that exists, with lines taken from it."""
    known = sorted(model.reservations)
    if not known:
        return
    step["store"], step["reservation_id"] = known[step["pick"] % len(known)]
    held_lines = model.reservations[(step["store"], step["reservation_id"])]["lines"]
    if step["line_plan"] == "none":
        step["lines"] = []
    elif step["line_plan"] == "all":
        step["lines"] = [(sku, max(1, model.remaining(line))) for sku, line in held_lines.items()]
    elif step["line_plan"] == "part":
        step["lines"] = [(sku, min(step["part"], line["qty"])) for sku, line in held_lines.items()][
            : step["part"]
        ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_rules_agree_with_the_reference_model_after_every_event(plan: list[dict[str, Any]]) -> None:
    state = LedgerState()
    model = ReferenceLedger()
    position = 0
    reservations_sent: list[dict[str, Any]] = []
    for number, planned in enumerate(plan):
        step = dict(planned)
        if step["type"] == "reserve_again":
            if not reservations_sent:
                continue
            step = dict(reservations_sent[step["pick"] % len(reservations_sent)])
        if step["type"] == "expire":
            known = sorted(model.reservations)
            if not known:
                continue
            step["store"], step["reservation_id"] = known[step["pick"] % len(known)]
            step["lines"] = []
            held = state.reservation(step["store"], step["reservation_id"])
            assert held is not None
            decision = Decision((expire(held, EVENT_TIME, f"x{number}"),))
        else:
            if step.get("target") == "known":
                aim_at_a_known_reservation(step, model)
            decision = decide(stock_event(step, number), state)
        if step["type"] == "reservation":
            reservations_sent.append(step)

        levels_before = level_snapshot(state)
        reservations_before = reservation_snapshot(state)
        expected = model.handle(step)
        assert_same_decision(decision, expected, step)
        if decision.entries:
            position += 1
            for entry in decision.entries:
                apply(entry, state, position)
        assert position == model.position

        if expected.outcome != "accepted":
            # rejected and duplicate events change nothing
            assert level_snapshot(state) == levels_before
            assert reservation_snapshot(state) == reservations_before
        elif step["type"] in ("sale", "reservation", "transfer"):
            # what a policy limits never goes below zero by what it accepts
            channel = step.get("channel") if step["type"] != "transfer" else None
            for sku, _ in step["lines"]:
                assert state.level(step["store"], sku).available_units >= 0
                if model.policy(step["store"], sku) is not None:
                    assert model.limit(step["store"], sku, channel) >= 0
        assert_same_state(state, model)


def test_the_reference_model_itself_follows_the_contract_example() -> None:
    """A hand-checked run, so a mistake in the model does not hide behind agreement with the rules."""
    model = ReferenceLedger()
    reserve = {"type": "reservation", "store": "s1", "reservation_id": "R1", "lines": [("A", 3)]}
    assert model.handle({"type": "receipt", "store": "s1", "lines": [("A", 5)]}).outcome == "accepted"
    assert model.handle(reserve).outcome == "accepted"
    sale = model.handle({"type": "sale", "store": "s1", "lines": [("A", 3)]})
    assert (sale.outcome, sale.reason, sale.shortfall) == ("rejected", "insufficient_stock", [("A", 3, 2)])
    assert model.handle(reserve).duplicate_of == 2
    conflict = model.handle({**reserve, "lines": [("A", 2)]})
    assert (conflict.outcome, conflict.reason) == ("rejected", "reservation_conflict")
    model.handle({"type": "shipment", "store": "s1", "reservation_id": "R1", "lines": [("A", 1)]})
    assert model.status("s1", "R1") == "partially_shipped"
    model.handle({"type": "expire", "store": "s1", "reservation_id": "R1", "lines": []})
    assert model.status("s1", "R1") == "expired"
    assert model.level("s1", "A") == {"on_hand": 4, "reserved": 0, "incoming": 0}
    assert model.position == 6
