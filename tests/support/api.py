"""Small HTTP helpers over the public REST API (CONTRACT §3)."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"
HISTORY_PAGE_MAX = 1000


def post_events(client: httpx.Client, *envelopes: dict[str, Any]) -> list[dict[str, Any]]:
    """Posts one envelope (as a single document) or several (as an array); returns the results."""
    body: Any = envelopes[0] if len(envelopes) == 1 else list(envelopes)
    response = client.post("/v1/events", json=body)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert len(results) == len(envelopes)
    return results


def record(client: httpx.Client, *envelopes: dict[str, Any]) -> list[dict[str, Any]]:
    """Posts events that must all be accepted; returns their results."""
    results = post_events(client, *envelopes)
    for result in results:
        assert result["outcome"] == "accepted", result
    return results


def level(client: httpx.Client, store: str, sku: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/stores/{store}/stock/{sku}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def levels_tuple(body: dict[str, Any]) -> tuple[int, int, int, int]:
    return body["on_hand"], body["reserved"], body["available"], body["incoming"]


def history(client: httpx.Client, store: str, **params: Any) -> list[dict[str, Any]]:
    """Every history entry of a store matching the filters, following `next` to the end."""
    entries: list[dict[str, Any]] = []
    query = {"limit": HISTORY_PAGE_MAX, **params}
    for _ in range(10_000):
        response = client.get(f"/v1/stores/{store}/history", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        entries.extend(page["entries"])
        if page["next"] is None:
            return entries
        query["after"] = page["next"]
    raise AssertionError("history paging did not end")


def reserve(
    client: httpx.Client, store: str, reservation_id: str, *pairs: tuple[str, int], **extra: Any
) -> httpx.Response:
    body = {"reservation_id": reservation_id, "lines": [{"sku": s, "qty": q} for s, q in pairs], **extra}
    return client.post(f"/v1/stores/{store}/reservations", json=body)


def put_policy(client: httpx.Client, store: str, sku: str, policy: dict[str, Any]) -> dict[str, Any]:
    """Sets (or with {} clears) a store's policy of a SKU or its default (`*`); the answer's body."""
    response = client.put(f"/v1/stores/{store}/policies/{sku}", json=policy)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    if type_ is not None:
        assert body["type"] == type_, body
    return body
