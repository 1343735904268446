"""POST /v1/events: one envelope or a batch, answered per event."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ledger.access.scopes import Grant, authorize_event
from ledger.api.deps import IntakeDep, LedgerDep, ProducerGrant, SettingsDep, principal
from ledger.api.media import CLOUDEVENT, CLOUDEVENTS_BATCH, EVENT_TYPES, JSON, require_media_type
from ledger.api.problems import invalid
from ledger.api.results import result_public
from ledger.api.schemas import EventResultsPublic, problem_responses
from ledger.domain.model import StockEvent
from ledger.intake.envelope import FieldError, InvalidEvent, read_envelope
from ledger.intake.json_keys import DUPLICATE_KEY, duplicate_keys, path_text
from ledger.intake.json_text import without_bom

router = APIRouter(tags=["events"])

SINGLE_TYPES = (JSON, CLOUDEVENT)
BATCH_TYPE = CLOUDEVENTS_BATCH


# An element of a batch is answered `invalid` in its place when it is not a valid envelope, so a
# batch may hold anything: its elements are described by EventEnvelope, and not held to it.
_BATCH = {
    "type": "array",
    "minItems": 1,
    "maxItems": 1000,
    "items": {"anyOf": [{"$ref": "#/components/schemas/EventEnvelope"}, {}]},
    "description": "1 to LEDGER_EVENTS_PER_REQUEST_MAX elements, each an EventEnvelope; an element "
    "that is not one is answered `invalid` with `errors` in its place, and the others are recorded",
}
_ONE_OR_BATCH = {"anyOf": [{"$ref": "#/components/schemas/EventEnvelope"}, _BATCH]}
EVENTS_BODY = {
    "required": True,
    "content": {media: {"schema": _ONE_OR_BATCH} for media in SINGLE_TYPES}
    | {BATCH_TYPE: {"schema": _BATCH}},
}


def parse_json(body: bytes) -> Any:
    """The body's JSON document; 422 when it is not JSON, or gives a key twice in one object."""
    raw = without_bom(body)
    document = _loads(raw)
    duplicates = duplicate_keys(raw, document)
    if duplicates:
        raise invalid([FieldError(path_text(path), DUPLICATE_KEY) for path in duplicates])
    return document


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise invalid([FieldError("", f"the body is not JSON: {error}")], "Body is not JSON") from None


def _duplicates_by_element(raw: bytes, document: Any) -> dict[int, list[FieldError]]:
    """A batch's keys given twice, by element (each named within its element, as the element's
    other errors are); a single envelope's refuse the body (422)."""
    by_element: dict[int, list[FieldError]] = {}
    for path in duplicate_keys(raw, document):
        if not path or not isinstance(path[0], int):
            raise invalid([FieldError(path_text(path), DUPLICATE_KEY)])
        by_element.setdefault(path[0], []).append(FieldError(path_text(path[1:]), DUPLICATE_KEY))
    return by_element


@router.post(
    "/v1/events",
    response_model=EventResultsPublic,
    responses=problem_responses(413, 415, 422, 503),
    openapi_extra={"requestBody": EVENTS_BODY},
    summary="Record one event or a batch",
)
async def post_events(
    request: Request, ledger: LedgerDep, limits: IntakeDep, settings: SettingsDep, grant: ProducerGrant
) -> Response:
    media_type = require_media_type(request.scope["headers"], EVENT_TYPES)
    raw = without_bom(await request.body())
    document = _loads(raw)
    duplicates = _duplicates_by_element(raw, document)
    sender = principal(grant)
    if not isinstance(document, list):
        if media_type == BATCH_TYPE:
            raise invalid([FieldError("", f"{BATCH_TYPE} must be a JSON array of envelopes")])
        _authorize(grant, [document])
        results = await ledger.submit([read_envelope(document, limits, sender)])  # InvalidEvent -> 422
        return _answer([result_public(results[0])])
    if not 1 <= len(document) <= settings.events_per_request_max:
        raise invalid([FieldError("", f"a batch holds 1 to {settings.events_per_request_max} events")])
    _authorize(grant, document)
    answers: list[dict[str, Any] | None] = []
    valid: list[StockEvent] = []
    for index, item in enumerate(document):
        if index in duplicates:
            answers.append(_invalid_result(item, InvalidEvent(duplicates[index])))
            continue
        try:
            valid.append(read_envelope(item, limits, sender))
            answers.append(None)
        except InvalidEvent as error:
            answers.append(_invalid_result(item, error))
    recorded = iter(await ledger.submit(valid)) if valid else iter(())
    return _answer([answer if answer is not None else result_public(next(recorded)) for answer in answers])


def _authorize(grant: Grant | None, documents: list[Any]) -> None:
    """Every element's store and source in the token's scope, before anything is read or recorded:
    one element out of scope refuses the whole request (403), valid or not."""
    if grant is None:
        return
    for document in documents:
        if isinstance(document, dict):
            authorize_event(grant, document.get("subject"), document.get("source"))


def _invalid_result(item: object, error: InvalidEvent) -> dict[str, Any]:
    ident = item.get("id") if isinstance(item, dict) else None
    source = item.get("source") if isinstance(item, dict) else None
    return {
        "id": ident if isinstance(ident, str) else None,
        "source": source if isinstance(source, str) else None,
        "outcome": "invalid",
        "errors": [e.as_dict() for e in error.errors],
    }


def _answer(results: list[dict[str, Any]]) -> Response:
    return Response(orjson.dumps({"results": results}), media_type="application/json")
