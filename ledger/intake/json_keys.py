"""Keys given twice in one JSON object. RFC 8259 §4: names "SHOULD be unique", and where they are
not, parsers differ (orjson, like most, keeps the last). A body such as `{"qty": 1, "qty": 500}`
is ambiguous, and an event is recorded for good: every way in (HTTP bodies, Kafka records,
`ledger import` lines) refuses it, naming the key.

The check runs on every body, so it is cheap when there is nothing to find: every `:` of JSON
text outside a string follows a key, and a string's `:` is written as itself or as `\\u003a`. So
for a text without `\\u003`, its colons are its keys and its strings' colons; the document parsed
from it holds as many unless a key was given twice (the value dropped took its key's colon, and
its strings' colons, with it). orjson writes the document back with every string's colons as
they are: the same count of colons, or some key was given twice. Only then (or when the text
escapes a colon) is it parsed again keeping every pair, to name the keys.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Names the paths as the envelope's errors do: `data.lines[0].qty`.
Path = tuple[str | int, ...]
_COLON = ord(":")  # count(int) skips the buffer a bytes argument is read through
_dumps = orjson.dumps


class _Pairs(list[tuple[str, Any]]):
    """An object's pairs in their order, as written (object_pairs_hook)."""


def duplicate_keys(raw: bytes, document: Any) -> list[Path]:
    """The path of each key given twice in one object of `raw` (once per object and key, in the
    text's order), `document` being what orjson parsed from it; [] when there is none."""
    # Measured with valgrind (bench figures in the commit): a compact text as orjson writes it
    # (JSON.stringify's, mostly) is told by one comparison, whose equality proves it has no key
    # twice; any other by the counts. `b"\\u003" in raw` cost 1,800 instructions more than find():
    # bytes' `in` first tries the needle as an int and formats the TypeError it then drops.
    try:
        text = _dumps(document)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254; it reads 1,024)
        text = None
    if text is not None and (
        text == raw or (raw.count(_COLON) == text.count(_COLON) and raw.find(b"\\u003") == -1)
    ):
        return []
    try:
        tree = json.loads(raw, object_pairs_hook=_Pairs)
    except RecursionError:
        # Nested deeper than Python's parser goes (about 1,000): no route reads anything that deep
        # (an envelope's, a reservation's fields are a few levels down), so what is ambiguous there
        # is nothing the ledger would decide by.
        return []
    found: list[Path] = []
    stack: list[tuple[Path, Any]] = [((), tree)]
    while stack:  # each node once: bounded by the text's size
        path, node = stack.pop()
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            named: set[str] = set()
            for key, _ in node:
                if key in seen and key not in named:
                    named.add(key)
                    found.append((*path, key))
                seen.add(key)
            stack.extend(((*path, key), value) for key, value in reversed(node))
        elif isinstance(node, list):
            stack.extend(((*path, index), item) for index, item in reversed(list(enumerate(node))))
    return found


def path_text(path: Path) -> str:
    """`data.lines[0].qty`; `[3].data` for an element of a top-level array."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


DUPLICATE_KEY = "is given twice in one object: which value is meant is ambiguous"
