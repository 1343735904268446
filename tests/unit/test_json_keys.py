"""Keys given twice in one JSON object are found, named by their path, however the text hides them
from the cheap count (escaped colons, colons in strings, in keys, in the value dropped)."""

from __future__ import annotations

import orjson
import pytest

from ledger.intake.json_keys import duplicate_keys, path_text


def _found(raw: bytes) -> list[str]:
    return [path_text(path) for path in duplicate_keys(raw, orjson.loads(raw))]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"reservation_id": "R1", "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}',
        b'{"time": "2026-11-22T10:15:00+03:00", "a:b": "c:d:e", "x": ["::", {"y": ":"}]}',
        b'{"a": "\\u003a", "b\\u003a": 1, "c": "\\\\u003a"}',
        b'[{"qty": 1}, {"qty": 2}]',
        b"[]",
        b'"qty"',
        b'{"a" : 1 , "b" :\n2}',
    ],
)
def test_a_text_without_a_key_twice_has_none(raw: bytes) -> None:
    assert _found(raw) == []


@pytest.mark.parametrize(
    ("raw", "paths"),
    [
        (b'{"qty": 1, "qty": 500}', ["qty"]),
        (b'{"lines": [{"sku": "A", "qty": 1, "qty": 500}]}', ["lines[0].qty"]),
        (b'{"data": {"lines": [{"sku": "A"}, {"sku": "B", "sku": "C"}]}}', ["data.lines[1].sku"]),
        (b'[{"id": "x"}, {"id": "y", "id": "z"}]', ["[1].id"]),
        # The cheap count misses nothing an escaped colon could make up for.
        (b'{"a": 1, "a": 2, "b": "\\u003a"}', ["a"]),
        # A value dropped with its colons, a key with one: still the same key twice.
        (b'{"a": "x:y", "a": "z", "k:1": 0}', ["a"]),
        # Named once per object, in the text's order, the outer object's first.
        (b'{"b": {"c": 1, "c": 2}, "a": 1, "a": 2, "a": 3, "b": 0}', ["a", "b", "b.c"]),
    ],
)
def test_each_key_given_twice_is_named_by_its_path(raw: bytes, paths: list[str]) -> None:
    assert _found(raw) == paths


def test_a_text_nested_deeper_than_orjson_writes_is_looked_at_all_the_same() -> None:
    """orjson reads 1,024 levels and writes 254: the cheap count must not fail (a 500) on such a body."""
    deep = b'{"a":' * 300 + b'{"b": 1, "b": 2}' + b"}" * 300
    assert _found(deep) == [".".join(["a"] * 300) + ".b"]
    deeper = b"[" * 1000 + b"]" * 1000
    assert _found(deeper) == []
