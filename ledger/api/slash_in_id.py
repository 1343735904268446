"""An API path whose id holds an encoded slash, answered as the invalid id it is.

Store ids, SKUs and reservation ids never hold `/` (CONTRACT §1: they appear in URL paths). Sent
percent-encoded, the slash is decoded before routing, and the path has one segment more: it
matched no operation (a bare 404 naming nothing), or worse, another one. `POST
/v1/stores/s/reservations/r%2Frelease` released reservation `r`, and `GET
/v1/stores/s/stock/A%2Fexplain` explained SKU `A`. Matched with each encoded slash kept inside its
segment, such a path finds the operation it was meant for, and the ids holding the slash are named
in a 422, as any other id the pattern refuses; a path that then matches no operation is not found.
Looked at before any route is chosen, for paths under /v1 only, as the router reads them (decoded:
`/%761/` is `/v1/`); the console and the docs serve files and pages of their own. A path without
`%2` pays one search of its bytes."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote

from starlette.routing import BaseRoute, Match

from ledger.api.problems import Problem, invalid
from ledger.domain.ids import ID_REGEX
from ledger.intake.envelope import FieldError

API_PREFIX = "/v1/"
# Stands for an encoded slash while the path is matched: a character that no route's template
# holds and that a path parameter (any characters but `/`) takes.
SLASH_STAND_IN = "\ufffe"


def holds_an_encoded_slash(path: str, raw_path: bytes) -> bool:
    """Whether an API path (by its decoded form: `/%761/` is `/v1/` to the router) was sent with an
    encoded slash."""
    return path.startswith(API_PREFIX) and b"%2f" in raw_path.lower()


def refusal(scope: MutableMapping[str, Any], routes: Iterable[BaseRoute]) -> tuple[Problem, str | None]:
    """The answer to an API path holding an encoded slash: the ids that hold it, by the operation
    the path matches with each slash kept in its segment, or not found; and that operation's path
    template (None when not found), for the metrics."""
    raw_path: bytes = scope["raw_path"]
    kept = "/".join(_decoded(segment) for segment in raw_path.split(b"?", 1)[0].split(b"/"))
    for route in routes:
        match, child_scope = route.matches({**scope, "path": kept})
        if match is Match.NONE:
            continue
        holding = [
            FieldError(name, f"String should match pattern '{ID_REGEX}': it holds '/' (sent as %2F)")
            for name, value in child_scope.get("path_params", {}).items()
            if isinstance(value, str) and SLASH_STAND_IN in value
        ]
        if holding:
            return invalid(holding), getattr(route, "path", None)
    not_found = "no operation has this path (an id holds no '/', not even as %2F)"
    return Problem(404, "not-found", "Not Found", not_found), None


def _decoded(segment: bytes) -> str:
    text = segment.decode("latin-1")
    for encoded in ("%2F", "%2f"):
        text = text.replace(encoded, SLASH_STAND_IN)
    return unquote(text)
