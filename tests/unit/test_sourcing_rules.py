"""Unit tests of sourcing's rule (CONTRACT §6) and of reservations across stores as decisions:
the first store that serves alone, else the smallest set, lexicographically first; each line taken
in candidate order; all parts or none; the same request again; the search's bound."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_book import EVENT_TIME, Book, event

from ledger.domain.across_stores import (
    ReserveAcrossStores,
    SourceAndReserve,
    decide_any,
    decide_parts,
    part_event,
    status_across,
)
from ledger.domain.model import (
    ChannelQuota,
    EventType,
    Line,
    Outcome,
    Policy,
    RejectionReason,
    ReservationStatus,
    Shortfall,
)
from ledger.domain.rules import apply
from ledger.domain.sourcing import Allocation, SearchTooLong, Unsourceable, _smallest_set, choose

E = EventType
STEPS = 100_000


def figures_of(table: dict[str, dict[str, int]]):  # type: ignore[no-untyped-def]
    return lambda store, sku: table.get(store, {}).get(sku, 0)


def order(*pairs: tuple[str, int]) -> tuple[Line, ...]:
    return tuple(Line(sku, qty) for sku, qty in pairs)


def stores_of(chosen: Allocation | Unsourceable) -> list[tuple[str, list[tuple[str, int]]]]:
    assert isinstance(chosen, Allocation), chosen
    return [(store, [(line.sku, line.qty_units) for line in lines]) for store, lines in chosen.stores]


def test_the_first_candidate_that_serves_every_line_alone_is_chosen() -> None:
    table = {"s1": {"A": 1, "B": 5}, "s2": {"A": 5, "B": 5}, "s3": {"A": 9, "B": 9}}
    chosen = choose(order(("A", 2), ("B", 2)), ("s1", "s2", "s3"), 3, figures_of(table), STEPS)
    assert stores_of(chosen) == [("s2", [("A", 2), ("B", 2)])]


def test_the_smallest_set_wins_over_a_larger_one_that_comes_first() -> None:
    """s1+s2+s3 would serve, and come first, but s3+s4 are fewer."""
    table = {
        "s1": {"A": 1},
        "s2": {"B": 1},
        "s3": {"C": 1},
        "s4": {"A": 1, "B": 1},
        "s5": {"C": 1},
    }
    chosen = choose(
        order(("A", 1), ("B", 1), ("C", 1)), ("s1", "s2", "s3", "s4", "s5"), 3, figures_of(table), STEPS
    )
    assert stores_of(chosen) == [("s3", [("C", 1)]), ("s4", [("A", 1), ("B", 1)])]


def test_among_sets_of_one_size_the_lexicographically_smallest_indexes_win() -> None:
    """{0, 3} and {1, 2} both serve: (0, 3) < (1, 2), the first difference decides."""
    table = {"s0": {"A": 2}, "s1": {"A": 1, "B": 1}, "s2": {"A": 1, "B": 1}, "s3": {"B": 2}}
    chosen = choose(order(("A", 2), ("B", 2)), ("s0", "s1", "s2", "s3"), 2, figures_of(table), STEPS)
    assert stores_of(chosen) == [("s0", [("A", 2)]), ("s3", [("B", 2)])]


def test_each_line_is_taken_from_the_chosen_stores_in_candidate_order() -> None:
    table = {"s1": {"A": 3, "B": 1}, "s2": {"A": 1, "B": 3}}
    chosen = choose(order(("A", 4), ("B", 4)), ("s1", "s2"), 2, figures_of(table), STEPS)
    assert stores_of(chosen) == [("s1", [("A", 3), ("B", 1)]), ("s2", [("A", 1), ("B", 3)])]


def test_a_lines_codes_go_with_the_store_that_takes_it_whole_and_a_split_line_carries_none() -> None:
    lines = (Line("A", 4, ("a1",)), Line("B", 2, ("b1", "b2")))
    table = {"s1": {"A": 3, "B": 2}, "s2": {"A": 1}}
    chosen = choose(lines, ("s1", "s2"), 2, figures_of(table), STEPS)
    assert isinstance(chosen, Allocation)
    assert chosen.stores == (
        ("s1", (Line("A", 3), Line("B", 2, ("b1", "b2")))),
        ("s2", (Line("A", 1),)),
    )
    alone = choose(lines, ("s3",), 1, figures_of({"s3": {"A": 4, "B": 2}}), STEPS)
    assert alone == Allocation((("s3", lines),))


def test_the_shortfall_names_each_line_that_all_candidates_together_cannot_serve() -> None:
    table = {"s1": {"A": 1, "B": 9}, "s2": {"A": 1, "C": -4}}  # below zero counts as zero
    chosen = choose(order(("A", 3), ("B", 2), ("C", 1)), ("s1", "s2"), 3, figures_of(table), STEPS)
    assert isinstance(chosen, Unsourceable)
    assert [(s.sku, s.requested_units, s.available_units) for s in chosen.shortfall] == [
        ("A", 3, 2),
        ("C", 1, 0),
    ]


def test_the_shortfall_is_empty_when_only_max_stores_stands_in_the_way() -> None:
    table = {"s1": {"A": 1}, "s2": {"A": 1}, "s3": {"A": 1}}
    assert choose(order(("A", 3)), ("s1", "s2", "s3"), 2, figures_of(table), STEPS) == Unsourceable(())


def test_an_order_too_hard_to_search_is_refused_rather_than_answered_late() -> None:
    """Every store holds one line only: no 5 of 100 serve 50 lines, and every per-line bound
    passes. The bound on lines per store cuts it at once; a tiny step budget is refused."""
    lines = order(*((f"L{n}", 1) for n in range(6)))
    table = {f"s{n:03d}": {f"L{n % 6}": 1, f"L{(n + 1) % 6}": 1} for n in range(40)}
    candidates = tuple(sorted(table))
    with pytest.raises(SearchTooLong):
        choose(lines, candidates, 5, figures_of(table), 3)
    assert isinstance(choose(lines, candidates, 3, figures_of(table), STEPS), Allocation)


def brute_force(
    lines: tuple[Line, ...], candidates: tuple[str, ...], max_stores: int, figure
) -> tuple[int, ...] | None:  # type: ignore[no-untyped-def]
    """The rule as the contract words it, by trying every set."""

    def serves(indexes: tuple[int, ...]) -> bool:
        return all(
            sum(max(0, figure(candidates[i], line.sku)) for i in indexes) >= line.qty_units for line in lines
        )

    for size in range(1, max_stores + 1):
        for indexes in itertools.combinations(range(len(candidates)), size):
            if serves(indexes):
                return indexes
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.integers(-1, 3), min_size=3, max_size=3), min_size=1, max_size=7),
    st.lists(st.integers(1, 5), min_size=1, max_size=3),
    st.integers(1, 5),
)
def test_the_search_chooses_what_trying_every_set_chooses(
    rows: list[list[int]], needs: list[int], max_stores: int
) -> None:
    candidates = tuple(f"s{n}" for n in range(len(rows)))
    skus = ["A", "B", "C"][: len(needs)]
    table = {
        store: dict(zip(["A", "B", "C"], row, strict=True))
        for store, row in zip(candidates, rows, strict=True)
    }
    lines = order(*zip(skus, needs, strict=True))
    expected = brute_force(lines, candidates, max_stores, figures_of(table))
    chosen = choose(lines, candidates, max_stores, figures_of(table), STEPS)
    if expected is None:
        assert isinstance(chosen, Unsourceable)
        return
    assert isinstance(chosen, Allocation)
    assert [store for store, _ in chosen.stores] == [candidates[i] for i in expected]
    taken: dict[str, int] = {}
    for store, store_lines in chosen.stores:
        for line in store_lines:
            assert 0 < line.qty_units <= table[store][line.sku]
            taken[line.sku] = taken.get(line.sku, 0) + line.qty_units
    assert taken == {line.sku: line.qty_units for line in lines}


def search_only(
    lines: tuple[Line, ...], candidates: tuple[str, ...], max_stores: int, figure, steps_max: int
) -> tuple[str, ...] | Unsourceable:  # type: ignore[no-untyped-def]
    """The rule with every candidate's figures read first and no shortcut to the sets of two: the
    first that serves alone, else the shortfall over every candidate, else `_Search` (which may
    raise SearchTooLong)."""
    rows = [[max(0, figure(store, line.sku)) for line in lines] for store in candidates]
    needs = [line.qty_units for line in lines]
    for index, row in enumerate(rows):
        if all(have >= need for have, need in zip(row, needs, strict=True)):
            return (candidates[index],)
    totals = [sum(column) for column in zip(*rows, strict=True)]
    short = tuple(
        Shortfall(line.sku, line.qty_units, total)
        for line, total in zip(lines, totals, strict=True)
        if total < line.qty_units
    )
    if short:
        return Unsourceable(short)
    chosen = _smallest_set(rows, needs, max_stores, steps_max)
    return Unsourceable(()) if chosen is None else tuple(candidates[index] for index in chosen)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.lists(st.integers(-1, 3), min_size=3, max_size=3), min_size=1, max_size=9),
    st.lists(st.integers(1, 5), min_size=1, max_size=3),
    st.integers(1, 5),
    st.integers(1, 60),
)
def test_the_pairs_are_tried_first_only_where_the_search_would_answer_the_same(
    rows: list[list[int]], needs: list[int], max_stores: int, steps_max: int
) -> None:
    """`choose` reads the figures lazily and tries the sets of two directly; whatever the step
    budget, it answers what the search over every candidate's figures answers, and runs out of
    steps exactly where that search does."""
    candidates = tuple(f"s{n}" for n in range(len(rows)))
    table = {
        store: dict(zip(["A", "B", "C"], row, strict=True))
        for store, row in zip(candidates, rows, strict=True)
    }
    lines = order(*zip(["A", "B", "C"], needs, strict=False))
    try:
        expected: object = search_only(lines, candidates, max_stores, figures_of(table), steps_max)
    except SearchTooLong:
        expected = SearchTooLong
    try:
        chosen = choose(lines, candidates, max_stores, figures_of(table), steps_max)
        answer: object = (
            tuple(store for store, _ in chosen.stores) if isinstance(chosen, Allocation) else chosen
        )
    except SearchTooLong:
        answer = SearchTooLong
    assert answer == expected


# -- as decisions of the writer --------------------------------------------------------------------


def across(
    reservation_id: str, *parts: tuple[str, tuple[tuple[str, int], ...]], channel: str | None = None
) -> ReserveAcrossStores:
    command = ReserveAcrossStores(
        event_id=f"across-{reservation_id}",
        source="tests/unit",
        type=E.RESERVATION,
        time=EVENT_TIME,
        store_id=parts[0][0],
        lines=(),
        reservation_id=reservation_id,
        channel=channel,
    )
    return ReserveAcrossStores(
        **{
            name: getattr(command, name)
            for name in ("event_id", "source", "type", "time", "store_id", "lines")
        },
        reservation_id=reservation_id,
        channel=channel,
        parts=tuple(part_event(command, store, order(*pairs)) for store, pairs in parts),
    )


def record(book: Book, command) -> object:  # type: ignore[no-untyped-def]
    decision = decide_any(command, book.state)
    if decision.entries:
        book.position += 1
        for entry in decision.entries:
            apply(entry, book.state, book.position)
    return decision


def test_a_reservation_across_stores_places_one_ordinary_reservation_per_store() -> None:
    book = Book()
    book.receive(("A", 5), store_id="s1")
    book.receive(("B", 5), store_id="s2")
    decision = record(book, across("R1", ("s1", (("A", 2),)), ("s2", (("B", 3),))))
    assert [(e.store_id, e.event.type, e.outcome) for e in decision.entries] == [
        ("s1", E.RESERVATION, Outcome.ACCEPTED),
        ("s2", E.RESERVATION, Outcome.ACCEPTED),
    ]
    assert book.levels("A", "s1") == (5, 2, 3, 0) and book.levels("B", "s2") == (5, 3, 2, 0)
    # From then on each part is a per-store reservation: a shipment at one store consumes it.
    book.record(event(E.SHIPMENT, ("A", 2), store_id="s1", reservation_id="R1"))
    parts = [book.reservation("R1", "s1"), book.reservation("R1", "s2")]
    assert [p.status for p in parts] == [ReservationStatus.SHIPPED, ReservationStatus.ACTIVE]
    assert status_across(parts) is ReservationStatus.PARTIALLY_SHIPPED


def test_one_part_short_reserves_nothing_and_names_its_store() -> None:
    book = Book()
    book.receive(("A", 5), store_id="s1")
    book.receive(("B", 1), store_id="s2")
    decision = record(book, across("R1", ("s1", (("A", 2),)), ("s2", (("B", 3),))))
    assert decision.entries == () and decision.refusal is not None
    assert decision.refusal.reason is RejectionReason.INSUFFICIENT_STOCK
    assert [
        (s.store_id, s.sku, s.requested_units, s.available_units) for s in decision.refusal.shortfall
    ] == [("s2", "B", 3, 1)]
    assert book.levels("A", "s1") == (5, 0, 5, 0)
    assert book.state.reservation("s1", "R1") is None


def test_the_same_reservation_again_is_a_duplicate_and_other_lines_a_conflict() -> None:
    book = Book()
    book.receive(("A", 5), store_id="s1")
    book.receive(("B", 5), store_id="s2")
    record(book, across("R1", ("s1", (("A", 2),)), ("s2", (("B", 3),))))
    again = record(book, across("R1", ("s1", (("A", 2),)), ("s2", (("B", 3),))))
    assert again.entries == () and again.duplicate_of_position == 3  # after the two receipts
    other = record(book, across("R1", ("s1", (("A", 1),)), ("s2", (("B", 3),))))
    assert other.refusal is not None and other.refusal.reason is RejectionReason.RESERVATION_CONFLICT
    # Held at one of the stores and not at the other: not the same request either.
    partly = record(book, across("R1", ("s1", (("A", 2),)), ("s3", (("B", 3),))))
    assert partly.refusal is not None and partly.refusal.reason is RejectionReason.RESERVATION_CONFLICT
    assert book.levels("A", "s1") == (5, 2, 3, 0)


def sourcing(
    reservation_id: str, *pairs: tuple[str, int], candidates: tuple[str, ...], **fields: object
) -> SourceAndReserve:
    return SourceAndReserve(
        event_id=reservation_id,
        source="tests/sourcing",
        type=E.RESERVATION,
        time=EVENT_TIME,
        store_id=candidates[0],
        lines=order(*pairs),
        reservation_id=reservation_id,
        candidates=candidates,
        search_steps_max=STEPS,
        **fields,  # type: ignore[arg-type]
    )


def test_sourcing_reserves_what_it_chose_with_the_figures_of_the_orders_channel() -> None:
    """s1 holds enough, but its online quota (30% of 10) leaves 3, and s2 holds 4: online is
    served by both, anything else by s1 alone."""
    book = Book()
    book.receive(("A", 10), store_id="s1")
    book.receive(("A", 4), store_id="s2")
    book.record(
        event(E.POLICY_CHANGED, ("A", 0), store_id="s1", policy=Policy(0, (ChannelQuota("online", pct=30),)))
    )
    decision = record(book, sourcing("R1", ("A", 5), candidates=("s1", "s2"), channel="online"))
    assert [(e.store_id, e.effects[0].reserved_delta) for e in decision.entries] == [("s1", 3), ("s2", 2)]
    assert book.level("A", "s1").channel_reserved == {"online": 3}
    plain = record(book, sourcing("R2", ("A", 5), candidates=("s1", "s2")))
    assert [(e.store_id, e.effects[0].reserved_delta) for e in plain.entries] == [("s1", 5)]


def test_sourcing_again_answers_what_it_placed_and_nothing_fitting_records_nothing() -> None:
    book = Book()
    book.receive(("A", 2), store_id="s1")
    book.receive(("A", 2), store_id="s2")
    record(book, sourcing("R1", ("A", 3), candidates=("s1", "s2")))
    book.record(event(E.POS_SALE, ("A", 1), store_id="s2"))  # the state moved on
    again = record(book, sourcing("R1", ("A", 3), candidates=("s1", "s2")))
    assert again.entries == () and again.duplicate_of_position == 3
    short = record(book, sourcing("R2", ("A", 3), candidates=("s1", "s2")))
    assert short.entries == () and short.refusal is not None
    assert [(s.sku, s.requested_units, s.available_units) for s in short.refusal.shortfall] == [("A", 3, 0)]


def test_commands_cross_the_writers_socket_whole() -> None:
    from ledger.domain.across_stores import reads_of
    from ledger.writer.wire import WriteRequest, decode_to_writer, encode

    command = sourcing("R9", ("A", 2), candidates=("s1", "s2"), channel="online", max_stores=2)
    reads_of(command)  # the writer's cache of probes is not sent
    placed = across("R8", ("s1", (("A", 2),)), ("s2", (("B", 3),)))
    message = decode_to_writer(encode(WriteRequest(7, [command, placed]))[4:])
    assert isinstance(message, WriteRequest)
    assert message.events == [command, placed]
    assert [type(event) for event in message.events] == [SourceAndReserve, ReserveAcrossStores]
    assert message.events[0].probes is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from("ABC"), st.integers(1, 6)), max_size=12),
    st.lists(
        st.tuples(
            st.integers(0, 3), st.sampled_from("ABC"), st.integers(1, 3), st.sampled_from([None, "online"])
        ),
        max_size=6,
    ),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 100)), max_size=3),
    st.lists(
        st.tuples(st.sampled_from("ABC"), st.integers(1, 4)), min_size=1, max_size=3, unique_by=lambda p: p[0]
    ),
    st.permutations(range(4)),
    st.sampled_from([None, "online"]),
    st.integers(1, 4),
)
def test_sourcing_records_what_the_per_store_rule_decides_for_each_part(
    receipts: list[tuple[int, str, int]],
    held: list[tuple[int, str, int, str | None]],
    policies: list[tuple[int, int, int]],
    lines: list[tuple[str, int]],
    candidate_order: list[int],
    channel: str | None,
    max_stores: int,
) -> None:
    """Sourcing writes its parts' entries itself instead of deciding each part again: they are
    exactly what the per-store rule decides for those parts in the same state (reservations of
    other ids held, safety stocks and channel quotas included), all accepted."""
    book = Book()
    for store, sku, qty in receipts:
        book.receive((sku, qty), store_id=f"s{store}")
    for number, (store, sku, qty, held_channel) in enumerate(held):
        book.record(
            event(
                E.RESERVATION,
                (sku, qty),
                store_id=f"s{store}",
                reservation_id=f"H{number}",
                channel=held_channel,
            )
        )
    for store, safety, pct in policies:
        policy = Policy(safety, (ChannelQuota("online", pct=pct),))
        for sku in "ABC":
            book.record(event(E.POLICY_CHANGED, (sku, 0), store_id=f"s{store}", policy=policy))
    candidates = tuple(f"s{n}" for n in candidate_order)
    command = sourcing("R1", *lines, candidates=candidates, channel=channel, max_stores=max_stores)
    decision = decide_any(command, book.state)
    if not decision.entries:
        assert decision.refusal is not None
        return
    parts = tuple(part_event(command, entry.store_id, entry.event.lines) for entry in decision.entries)
    assert [entry.event for entry in decision.entries] == list(parts)
    assert decision == decide_parts(parts, book.state)
    placed: dict[str, int] = {}
    for entry in decision.entries:
        for effect in entry.effects:
            placed[effect.sku] = placed.get(effect.sku, 0) + effect.reserved_delta
    assert placed == dict(lines)
