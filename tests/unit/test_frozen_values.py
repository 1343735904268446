"""`@frozen_value` makes the same class as `@dataclass(frozen=True, slots=True)`, only quicker to build."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.domain.frozen_values import frozen_value
from ledger.domain.model import Entry, EventType, Line, LineEffect, Shortfall, StockEvent
from ledger.importer.reading import ValidLine
from ledger.projections.tables import RecordedEntry
from ledger.results import EventResult
from ledger.storage.codec import DecodedEntry


@dataclasses.dataclass(frozen=True, slots=True)
class Plain:
    name: str
    count: int
    note: str | None = None
    tags: tuple[str, ...] = ()


@frozen_value
class Quick:
    name: str
    count: int
    note: str | None = None
    tags: tuple[str, ...] = ()


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a", 1), {}),
    (("a", 1, "n"), {}),
    (("a", 1, "n", ("x",)), {}),
    (("a",), {"count": 2, "tags": ("y",)}),
    ((), {"name": "b", "count": 3, "note": None}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_a_frozen_value_holds_what_the_dataclass_holds(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    quick, plain = Quick(*args, **kwargs), Plain(*args, **kwargs)
    assert [getattr(quick, f.name) for f in dataclasses.fields(Quick)] == [
        getattr(plain, f.name) for f in dataclasses.fields(Plain)
    ]
    assert repr(quick) == repr(plain).replace("Plain", "Quick")
    assert quick == Quick(*args, **kwargs) and hash(quick) == hash(Quick(*args, **kwargs))
    assert quick != Quick("other", 9)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        (("a",), {}),
        (("a", 1, None, (), "extra"), {}),
        (("a", 1), {"name": "b"}),
        (("a", 1), {"x": 1}),
    ],
)
def test_a_frozen_value_refuses_the_calls_the_dataclass_refuses(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        Plain(*args, **kwargs)
    with pytest.raises(TypeError):
        Quick(*args, **kwargs)


def test_a_frozen_value_stays_frozen_and_slotted() -> None:
    quick = Quick("a", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.count = 2  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        quick.other = 1  # type: ignore[attr-defined]
    assert not hasattr(quick, "__dict__")
    assert pickle.loads(pickle.dumps(quick)) == quick
    assert dataclasses.replace(quick, count=5) == Quick("a", 5)


def _listed() -> None:
    @frozen_value
    class _Listed:
        items: list[str] = dataclasses.field(default_factory=list)


def _uninitialised() -> None:
    @frozen_value
    class _Uninitialised:
        count: int = dataclasses.field(default=0, init=False)


def _keyword_only() -> None:
    @frozen_value
    class _KeywordOnly:
        count: int = dataclasses.field(default=0, kw_only=True)


def _post_init() -> None:
    @frozen_value
    class _Checked:
        count: int

        def __post_init__(self) -> None:
            assert self.count >= 0


def _init_var() -> None:
    @frozen_value
    class _Derived:
        count: int
        scale: dataclasses.InitVar[int] = 1


@pytest.mark.parametrize("make", [_listed, _uninitialised, _keyword_only, _post_init, _init_var])
def test_fields_its_init_would_not_honour_are_refused(make: Any) -> None:
    with pytest.raises(TypeError, match="@frozen_value"):
        make()


def test_a_subclass_sets_its_bases_fields_too() -> None:
    @frozen_value
    class Counted(Quick):
        total: int = 0

    counted = Counted("a", 1, None, (), 7)
    assert (counted.name, counted.count, counted.total) == ("a", 1, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        counted.name = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    "cls",
    [Line, LineEffect, StockEvent, Entry, Shortfall, DecodedEntry, RecordedEntry, EventResult, ValidLine],
)
def test_the_ledgers_hot_values_are_frozen_values(cls: type[Any]) -> None:
    """The values made per event use the quick `__init__` (it sets through slot descriptors)."""
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen and "__slots__" in cls.__dict__  # type: ignore[attr-defined]
    assert "_set_" in " ".join(cls.__init__.__code__.co_names)


def test_an_event_takes_its_defaults() -> None:
    event = StockEvent(
        "e-1", "shop", EventType.RECEIPT, datetime(2026, 12, 5, tzinfo=UTC), "s", (Line("A", 2),)
    )
    assert event.lines == (Line("A", 2, ()),)
    assert (event.order_id, event.expires_at, event.principal, event.channel, event.policy) == (None,) * 5
