"""POST /v1/events: one envelope or a batch, answered per event."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ledger.api.deps import IntakeDep, LedgerDep, SettingsDep
from ledger.api.problems import Problem, invalid
from ledger.api.results import result_public
from ledger.api.schemas import EventEnvelope, EventResultsPublic, problem_responses
from ledger.domain.model import StockEvent
from ledger.intake.envelope import FieldError, InvalidEvent, read_envelope

router = APIRouter(tags=["events"])

SINGLE_TYPES = ("application/json", "application/cloudevents+json")
BATCH_TYPE = "application/cloudevents-batch+json"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise invalid([FieldError("", f"the body is not JSON: {error}")], "Body is not JSON") from None


@router.post(
    "/v1/events",
    response_model=EventResultsPublic,
    responses=problem_responses(413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {"schema": {"$ref": "#/components/schemas/EventEnvelope"}} for media in SINGLE_TYPES
            }
            | {
                BATCH_TYPE: {
                    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/EventEnvelope"}}
                }
            },
        }
    },
    summary="Record one event or a batch",
)
async def post_events(
    request: Request, ledger: LedgerDep, limits: IntakeDep, settings: SettingsDep
) -> Response:
    media_type = _media_type(request)
    if media_type not in (*SINGLE_TYPES, BATCH_TYPE):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send {', '.join((*SINGLE_TYPES, BATCH_TYPE))}, not {media_type or 'no content type'}",
        )
    document = parse_json(await request.body())
    if not isinstance(document, list):
        if media_type == BATCH_TYPE:
            raise invalid([FieldError("", f"{BATCH_TYPE} must be a JSON array of envelopes")])
        results = await ledger.submit([read_envelope(document, limits)])  # InvalidEvent -> 422
        return _answer([result_public(results[0])])
    if not 1 <= len(document) <= settings.events_per_request_max:
        raise invalid([FieldError("", f"a batch holds 1 to {settings.events_per_request_max} events")])
    answers: list[dict[str, Any] | None] = []
    valid: list[StockEvent] = []
    for item in document:
        try:
            valid.append(read_envelope(item, limits))
            answers.append(None)
        except InvalidEvent as error:
            answers.append(_invalid_result(item, error))
    recorded = iter(await ledger.submit(valid)) if valid else iter(())
    return _answer([answer if answer is not None else result_public(next(recorded)) for answer in answers])


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


_ = EventEnvelope  # referenced by the OpenAPI document above
