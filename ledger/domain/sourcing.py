"""Sourcing (CONTRACT §6): which candidate stores serve an order, by a deterministic rule.

The first candidate that can serve every line alone; else the smallest set of at most `max_stores`
candidates that can, and among sets of one size the one whose candidate indexes, sorted, are
lexicographically smallest. Each line is then taken from the chosen stores in candidate order.

The search walks the sets of each size in lexicographic order (so the first set that serves is
the answer) and skips every branch that cannot serve: a line whose remaining need exceeds what
the best candidates left could give, or more unserved lines than the stores left could touch.
Finding the smallest set is a set cover, so an adversarial order can still make the walk long:
it is bounded by `steps_max` nodes, and an order that would need more is refused as too hard
(`SearchTooLong`), never answered late.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from ledger.domain.model import Line, Shortfall

MAX_STORES_LIMIT = 5  # CONTRACT §6: max_stores is 1 to 5


@dataclass(frozen=True, slots=True)
class Allocation:
    """Per chosen store, in candidate order, the lines it serves (qty > 0 only)."""

    stores: tuple[tuple[str, tuple[Line, ...]], ...]


@dataclass(frozen=True, slots=True)
class Unsourceable:
    """Nothing fits. `shortfall`: each line whose qty exceeds the sum of its figures over every
    candidate (`available_units` = that sum); empty when only `max_stores` stands in the way."""

    shortfall: tuple[Shortfall, ...]


class SearchTooLong(Exception):
    """The search would visit more than `steps_max` sets: the order is refused as too hard."""

    def __init__(self, steps_max: int) -> None:
        super().__init__(f"the search for stores would take more than {steps_max} steps")
        self.steps_max = steps_max


# The figure a line may take at a store: the same one a reservation of the order's channel is
# limited by (ledger/domain/policy.py's line_limit_units). Below zero counts as zero.
Figure = Callable[[str, str], int]


def choose(
    lines: tuple[Line, ...], candidates: tuple[str, ...], max_stores: int, figure: Figure, steps_max: int
) -> Allocation | Unsourceable:
    assert 1 <= max_stores <= MAX_STORES_LIMIT, max_stores
    assert len(set(candidates)) == len(candidates), "candidates are distinct"
    needs = [line.qty_units for line in lines]
    skus = [line.sku for line in lines]
    # The first candidate that serves alone ends the search: its figures are read store by store,
    # each store's only up to its first line it cannot serve; the rest only when none serves alone.
    # Zipped once, not per candidate: that zip was half of this loop's CPU.
    wanted = tuple(zip(skus, needs, strict=True))
    figures: list[list[int]] = []
    for index, store in enumerate(candidates):
        row: list[int] = []
        figures.append(row)
        for sku, need in wanted:
            have = figure(store, sku)
            row.append(have if have > 0 else 0)
            if have < need:
                break
        else:
            return _allocate(lines, candidates, figures, (index,))
    rows = _Rows(candidates, skus, figure, figures)
    if max_stores >= 2 and _pair_steps_max(len(candidates)) <= steps_max:
        pair = _first_pair(rows, needs)
        if pair is not None:
            return _allocate(lines, candidates, figures, pair)
    for index in range(len(candidates)):
        rows.complete(index)
    totals = [sum(column) for column in zip(*figures, strict=True)] if figures else [0] * len(lines)
    short = tuple(
        Shortfall(line.sku, line.qty_units, total)
        for line, total in zip(lines, totals, strict=True)
        if total < line.qty_units
    )
    if short:
        return Unsourceable(short)
    chosen = _smallest_set(figures, needs, max_stores, steps_max)
    if chosen is None:
        return Unsourceable(())
    return _allocate(lines, candidates, figures, chosen)


class _Rows:
    """The candidates' figures, each row read up to a line only as far as it was needed so far."""

    def __init__(self, candidates: tuple[str, ...], skus: list[str], figure: Figure, rows: list[list[int]]):
        self.candidates, self.skus, self.figure, self.rows = candidates, skus, figure, rows

    def complete(self, index: int) -> list[int]:
        row = self.rows[index]
        if len(row) < len(self.skus):
            store, figure = self.candidates[index], self.figure
            row.extend(max(0, figure(store, sku)) for sku in self.skus[len(row) :])
        return row


def _pair_steps_max(count: int) -> int:
    """The most steps `_Search` takes over the sets of two of `count` candidates: the root, a node
    per first member, a node per pair."""
    return 1 + count + count * (count - 1) // 2


def _first_pair(rows: _Rows, needs: list[int]) -> tuple[int, int] | None:
    """The lexicographically first pair that serves every line, when no candidate serves alone:
    what `_Search` finds among the sets of two, without reading every candidate's figures first
    (most orders a single store cannot serve are served by two of the first few). Called only when
    `_Search` could not run out of steps over the pairs, so that it would answer the same."""
    count = len(rows.rows)
    for first_index in range(count - 1):
        first = rows.complete(first_index)
        if not any(first):
            continue  # serves nothing, and no one serves alone: in no pair that serves
        for second_index in range(first_index + 1, count):
            second = rows.complete(second_index)
            for line_index, need in enumerate(needs):
                if first[line_index] + second[line_index] < need:
                    break
            else:
                return (first_index, second_index)
    return None


def _allocate(
    lines: tuple[Line, ...], candidates: tuple[str, ...], figures: list[list[int]], chosen: tuple[int, ...]
) -> Allocation:
    if len(chosen) == 1 and all(line.qty_units > 0 for line in lines):
        return Allocation(((candidates[chosen[0]], lines),))  # it takes every line as it is, codes too
    taken: dict[int, list[Line]] = {index: [] for index in chosen}
    for line_index, line in enumerate(lines):
        left = line.qty_units
        for index in chosen:
            units = min(left, figures[index][line_index])
            if units > 0:
                # A line's codes name the units the order asks for, each at one store: a store that
                # takes the whole line takes them; a line taken from several takes none, since
                # which store holds which unit is not the ledger's to know.
                codes = line.codes if units == line.qty_units else ()
                taken[index].append(Line(line.sku, units, codes))
                left -= units
        assert left == 0, (line, chosen)
    return Allocation(tuple((candidates[index], tuple(taken[index])) for index in chosen if taken[index]))


class _Search:
    """The walk over sets of one size at a time, over the candidates that hold anything useful
    (a smallest set never holds a store that serves nothing: without it, it would still serve)."""

    def __init__(self, figures: list[list[int]], needs: list[int], max_stores: int, steps_max: int) -> None:
        self.useful = [index for index, row in enumerate(figures) if any(row)]
        self.rows = [figures[index] for index in self.useful]
        self.steps_left = steps_max
        self.steps_max = steps_max
        count = len(self.rows)
        line_count = len(needs)
        # most_from[p][l]: the running sums of line l's largest figures from position p onwards, at
        # most max_stores of them: the most that m candidates from p give is its (m-1)th item. A
        # candidate that changes no line's largest figures shares the lists of the one after it.
        self.most_from: list[list[tuple[int, ...]]] = [[] for _ in range(count + 1)]
        self.most_from[count] = [()] * line_count
        tops: list[tuple[int, ...]] = [()] * line_count
        # touched[p]: the most lines one candidate from p onwards has anything of.
        self.touched = [0] * (count + 1)
        for position in range(count - 1, -1, -1):
            row = self.rows[position]
            self.touched[position] = max(self.touched[position + 1], sum(1 for have in row if have))
            most = list(self.most_from[position + 1])
            for line_index, have in enumerate(row):
                top = tops[line_index]
                if not have or (len(top) == max_stores and have <= top[-1]):
                    continue
                top = tuple(sorted((*top, have), reverse=True)[:max_stores])
                tops[line_index] = top
                most[line_index] = tuple(itertools.accumulate(top))
            self.most_from[position] = most

    def first_set(self, size: int, needs: list[int]) -> tuple[int, ...] | None:
        return self._walk(0, size, needs, ())

    def _walk(
        self, start: int, slots: int, needs: list[int], chosen: tuple[int, ...]
    ) -> tuple[int, ...] | None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise SearchTooLong(self.steps_max)
        open_lines = [index for index, need in enumerate(needs) if need > 0]
        if not open_lines:
            return chosen
        if slots == 0 or len(open_lines) > slots * self.touched[start]:
            return None
        most = self.most_from[start]
        for index in open_lines:
            sums = most[index]
            if not sums or sums[min(slots, len(sums)) - 1] < needs[index]:
                return None
        for position in range(start, len(self.rows) - slots + 1):
            row = self.rows[position]
            if not any(row[index] for index in open_lines):
                continue
            after = [need - have if need > have else 0 for need, have in zip(needs, row, strict=True)]
            found = self._walk(position + 1, slots - 1, after, (*chosen, self.useful[position]))
            if found is not None:
                return found
        return None


def _smallest_set(
    figures: list[list[int]], needs: list[int], max_stores: int, steps_max: int
) -> tuple[int, ...] | None:
    """The smallest set of 2 to `max_stores` candidates that serves every line, lexicographically
    first among its size; None when there is none."""
    search = _Search(figures, needs, max_stores, steps_max)
    for size in range(2, max_stores + 1):
        found = search.first_set(size, needs)
        if found is not None:
            return found
    return None
