"""The API's description: openapi.json and schemas/event-envelope.schema.json at the repository root
are what the service serves and uses, so that a change to the API shows in review.

After a deliberate change, rewrite both and review the diff:
    LEDGER_TEST_REWRITE_API_DOCS=1 pytest tests/e2e/test_openapi_document.py
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.raw_http import raw_answer
from support.server import LedgerServer

from ledger.api.envelope_schema import envelope_schema

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = ROOT / "openapi.json"
ENVELOPE_PATH = ROOT / "schemas" / "event-envelope.schema.json"
REWRITE = os.environ.get("LEDGER_TEST_REWRITE_API_DOCS") == "1"
PROBLEM = "application/problem+json"


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _check_committed(path: Path, document: dict[str, Any]) -> None:
    if REWRITE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(_text(document))
    assert path.exists(), f"{path.name} is missing: run with LEDGER_TEST_REWRITE_API_DOCS=1"
    assert json.loads(path.read_text()) == document, (
        f"{path.relative_to(ROOT)} differs from what the service serves: "
        "rewrite it with LEDGER_TEST_REWRITE_API_DOCS=1 and review the diff"
    )


@pytest.fixture(scope="module")
def served(ledger_server: LedgerServer) -> dict[str, Any]:
    with ledger_server.client() as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def test_the_committed_openapi_document_is_what_the_service_serves(served: dict[str, Any]) -> None:
    _check_committed(OPENAPI_PATH, served)


def test_the_committed_envelope_schema_is_the_one_the_api_describes(served: dict[str, Any]) -> None:
    schema = envelope_schema()
    _check_committed(ENVELOPE_PATH, schema)
    embedded = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    assert served["components"]["schemas"]["EventEnvelope"] == embedded


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_answer_is_a_problem_under_its_own_media_type(served: dict[str, Any]) -> None:
    for name, operation in _operations(served):
        for status, response in operation["responses"].items():
            content = response.get("content", {})
            if int(status) >= 400:
                assert list(content) == [PROBLEM], f"{name} {status}: {list(content)}"
                assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/ProblemPublic"}
            else:
                assert PROBLEM not in content, f"{name} {status}"


def test_an_operation_that_takes_no_input_documents_no_422(served: dict[str, Any]) -> None:
    """Nothing of a request to /readyz is read (the request id is replaced when unsound, not
    refused): it never answers 422, so its description does not say it may."""
    for name, operation in _operations(served):
        parameters = [
            p for p in operation["parameters"] if p != {"$ref": "#/components/parameters/RequestId"}
        ]
        if not parameters and "requestBody" not in operation:
            assert "422" not in operation["responses"], name


def test_the_problem_schema_has_every_field_a_problem_carries(served: dict[str, Any]) -> None:
    schemas = served["components"]["schemas"]
    fields = set(schemas["ProblemPublic"]["properties"])
    expected = {"type", "title", "status", "detail", "instance", "shortfall", "errors", "position"}
    assert expected | {"role", "store", "source"} <= fields
    carried = {keyword for answer in _problems_made() for keyword in answer.keywords}
    assert carried <= fields, f"fields a problem carries that ProblemPublic lacks: {carried - fields}"
    # A reservation across stores and sourcing name the store of each short line.
    shortfall = schemas["ProblemPublic"]["properties"]["shortfall"]["anyOf"][0]["items"]["$ref"]
    assert "store" in schemas[shortfall.rsplit("/", 1)[1]]["properties"]


@dataclass(frozen=True)
class _Made:
    """A problem the API's code makes: its status and slug where the code spells them out."""

    where: str
    status: int | None
    slug: str | None
    keywords: frozenset[str] = frozenset()


# Problems whose status or slug the code takes from elsewhere, and where that is.
_PASSED_ON = {
    "ledger/api/console/pages.py:_problem": "the API's own answer to a read the page made, shown",
    "ledger/api/problems.py:install_handlers": "Starlette's status, by HTTP_ERROR_TYPES",
    "ledger/api/problems.py:problem_response": "the body of every Problem",
}
_SLUG = re.compile(r"[a-z]+(-[a-z]+)*")


def _problems_made() -> list[_Made]:
    """Every problem the code of ledger/api makes: each `Problem(...)`, each problem body written
    as a dict (the server's own 400), and each status-to-slug map."""
    made: list[_Made] = []
    for path in sorted((ROOT / "ledger" / "api").rglob("*.py")):
        for statement in ast.parse(path.read_text(), str(path)).body:
            where = f"{path.relative_to(ROOT)}:{getattr(statement, 'name', '<module>')}"
            made += [found for node in ast.walk(statement) for found in _made_at(node, where)]
    return list(dict.fromkeys(made))


def _constant(node: ast.expr | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _made_at(node: ast.AST, where: str) -> Iterator[_Made]:
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Problem":
        args = [*node.args, None, None]
        status, slug = _constant(args[0]), _constant(args[1])
        keywords = frozenset(k.arg for k in node.keywords if k.arg not in (None, "headers"))
        yield _Made(where, status, slug, keywords)
    elif isinstance(node, ast.Dict):
        pairs = {_constant(key): _constant(value) for key, value in zip(node.keys, node.values, strict=True)}
        if {"type", "title", "status"} <= set(pairs):  # a problem's body, written out
            yield _Made(where, pairs["status"], pairs["type"])
        elif pairs and all(type(key) is int and 400 <= key < 600 for key in pairs):
            slugs = {
                key: value
                for key, value in pairs.items()
                if isinstance(value, str) and _SLUG.fullmatch(value)
            }
            yield from (_Made(where, key, value) for key, value in slugs.items())


def test_every_place_passed_on_still_passes_a_problem_on() -> None:
    """_PASSED_ON cannot go stale: an entry whose place is gone, renamed, or now spells out its
    problem's slug and status would let a new problem there pass unchecked."""
    passing_on = {m.where for m in _problems_made() if m.slug is None or m.status is None}
    stale = sorted(set(_PASSED_ON) - passing_on)
    assert stale == [], "_PASSED_ON names places that make no problem whose slug or status is passed on"


def _slug_entries(served: dict[str, Any]) -> dict[str, str]:
    """The problem types the document lists, each with its line of the `type` description."""
    description = served["components"]["schemas"]["ProblemPublic"]["properties"]["type"]["description"]
    return dict(re.findall(r"^- `([a-z-]+)` (.*)$", description, re.MULTILINE))


def test_every_problem_type_the_code_answers_is_in_the_document_with_its_status(
    served: dict[str, Any],
) -> None:
    """The document lists each problem `type` with its statuses, and every status of every slug is
    answered by some operation that names the slug, or is said to come from outside the
    operations (the console, a preflight, an unknown route)."""
    listed = _slug_entries(served)
    made = _problems_made()
    unspelled = sorted({m.where for m in made if m.slug is None or m.status is None} - set(_PASSED_ON))
    assert unspelled == [], "a problem whose slug or status the code does not spell out"
    missing = sorted(
        {f"{m.slug} ({m.status}) at {m.where}" for m in made if m.slug is not None and m.slug not in listed}
    )
    assert missing == [], "problem types the code answers that the document does not list"
    unstated = sorted(
        f"{m.slug} ({m.status}) at {m.where}"
        for m in made
        if m.slug and f"{m.status}" not in listed[m.slug].split(":", 1)[0]
    )
    assert unstated == [], "statuses the document does not give a problem type"
    outside = "not answered by the operations below"
    for slug, entry in listed.items():
        if outside in entry:
            continue
        for status in re.findall(r"\b[45]\d\d\b", entry.split(":", 1)[0]):
            named = [
                name
                for name, operation in _operations(served)
                if f"`{slug}`" in operation["responses"].get(status, {}).get("description", "")
            ]
            assert named, f"no operation documents {status} `{slug}`"


def _integers(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "integer":
            yield where, node
        for key, value in node.items():
            yield from _integers(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _integers(value, f"{where}/{index}")


def test_every_number_has_bounds(served: dict[str, Any]) -> None:
    unbounded = [where for where, schema in _integers(served, "#") if "minimum" not in schema]
    unbounded += [where for where, schema in _integers(served, "#") if "maximum" not in schema]
    assert unbounded == []


def test_every_integer_bound_is_an_integer_within_64_bits(served: dict[str, Any]) -> None:
    """The response schemas said `maximum: 9.223372036854776e+18` (2**63, past an int64) for levels
    and positions."""
    for where, schema in _integers(served, "#"):
        for key in ("minimum", "maximum"):
            assert type(schema[key]) is int and -(2**63) < schema[key] < 2**63, (where, key, schema[key])


def test_every_operation_has_a_summary_written_by_hand(served: dict[str, Any]) -> None:
    for name, operation in _operations(served):
        summary = operation.get("summary", "")
        assert summary and summary != summary.title(), f"{name}: {summary!r}"


def test_the_document_says_the_package_version_and_the_bearer_scheme(served: dict[str, Any]) -> None:
    from importlib.metadata import version

    assert served["info"]["version"] == version("stock-ledger")
    assert served["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    metrics = served["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]


def test_every_operation_takes_a_request_id_and_every_answer_carries_one(served: dict[str, Any]) -> None:
    """Every answer but a 400, which may be the server's own to bytes it could not read: that one
    carries none (the next test), so the document does not promise one on a 400."""
    components = served["components"]
    parameter, header = components["parameters"]["RequestId"], components["headers"]["RequestId"]
    assert (parameter["name"], parameter["in"], header["required"]) == ("X-Request-ID", "header", True)
    for name, operation in _operations(served):
        assert {"$ref": "#/components/parameters/RequestId"} in operation["parameters"], name
        for status, response in operation["responses"].items():
            reference = response["headers"]["X-Request-ID"]
            if status != "400":
                assert reference == {"$ref": "#/components/headers/RequestId"}, f"{name} {status}"


def test_the_servers_own_400_carries_no_request_id_and_no_400_is_documented_to_carry_one(
    served: dict[str, Any], ledger_server: LedgerServer
) -> None:
    """Every 400 of the document names the server's own answer to bytes that are not a request it
    can read (`invalid-request`), which no request id reaches: a header required there would be a
    promise that answer breaks."""
    status, headers, body = raw_answer(ledger_server.port, b"GET /healthz now HTTP/1.1\r\n\r\n")
    assert (status, json.loads(body)["type"]) == (400, "invalid-request"), body
    assert "x-request-id" not in headers, headers
    components = served["components"]["headers"]
    for name, operation in _operations(served):
        reference = operation["responses"]["400"]["headers"]["X-Request-ID"]["$ref"]
        header = components[reference.rsplit("/", 1)[1]]
        assert header["required"] is False and header["schema"] == components["RequestId"]["schema"], name


def test_the_request_ids_served_match_the_documented_pattern(
    served: dict[str, Any], ledger_server: LedgerServer
) -> None:
    import re

    header = served["components"]["headers"]["RequestId"]
    pattern = re.compile(header["schema"]["pattern"])
    with ledger_server.client() as client:
        made = client.get("/v1/stores/store-1/stock/SKU-1").headers["x-request-id"]
        kept = client.get("/healthz", headers={"X-Request-ID": "till-12:000123"}).headers["x-request-id"]
        replaced = client.get("/healthz", headers={"X-Request-ID": "a b"}).headers["x-request-id"]
        refused = client.get("/v1/stores/store-1/history?limit=0")
    assert (refused.status_code, refused.headers["content-type"]) == (422, PROBLEM)
    problem = refused.headers["x-request-id"]
    assert kept == "till-12:000123"
    for request_id in (made, kept, replaced, problem):
        assert pattern.fullmatch(request_id), request_id
    for request_id in (made, replaced, problem):  # made: 32 hex digits
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    assert not pattern.fullmatch("a b") and not pattern.fullmatch("x" * 129)
