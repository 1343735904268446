"""`@record` makes the same class as `@dataclass(frozen=True, slots=True)`, only quicker to build."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.domain.model import Entry, EventType, Line, LineEffect, Shortfall, StockEvent
from ledger.domain.records import record
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


@record
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
def test_a_record_holds_what_the_dataclass_holds(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
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
def test_a_record_refuses_the_calls_the_dataclass_refuses(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        Plain(*args, **kwargs)
    with pytest.raises(TypeError):
        Quick(*args, **kwargs)


def test_a_record_stays_frozen_and_slotted() -> None:
    quick = Quick("a", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.count = 2  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        quick.other = 1  # type: ignore[attr-defined]
    assert not hasattr(quick, "__dict__")
    assert pickle.loads(pickle.dumps(quick)) == quick
    assert dataclasses.replace(quick, count=5) == Quick("a", 5)


def test_a_record_refuses_fields_its_init_cannot_make() -> None:
    with pytest.raises(AssertionError, match="default_factory"):

        @record
        class _Listed:
            items: list[str] = dataclasses.field(default_factory=list)


@pytest.mark.parametrize(
    "cls",
    [Line, LineEffect, StockEvent, Entry, Shortfall, DecodedEntry, RecordedEntry, EventResult, ValidLine],
)
def test_the_ledgers_hot_values_are_records(cls: type[Any]) -> None:
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
