"""A small JSON-over-HTTP client on the standard library, with explicit timeouts.

It never raises for an HTTP status (the caller decides what 4xx and 5xx mean for its target); it
raises `TransportError` when no answer came at all (refused, reset, timed out), which every caller
treats as retryable.
"""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESPONSE_BYTES_MAX = 64 * 1024 * 1024


class TransportError(Exception):
    """No HTTP answer: connection refused or reset, DNS failure, timeout."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


class HttpClient:
    def __init__(self, base_url: str, timeout_s: float, headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.headers = {"Accept": "application/json", "Accept-Encoding": "gzip", **(headers or {})}

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path.lstrip("/")
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params, doseq=True)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        data = None
        all_headers = dict(self.headers)
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(
            self.url(path, params), data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return _response(answer.status, dict(answer.headers.items()), answer.read(RESPONSE_BYTES_MAX))
        except urllib.error.HTTPError as error:
            return _response(error.code, dict(error.headers.items()), error.read(RESPONSE_BYTES_MAX))
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            raise TransportError(f"{method} {self.url(path)}: {error}") from error


def _response(status: int, headers: dict[str, str], body: bytes) -> Response:
    if any(k.lower() == "content-encoding" and v.lower() == "gzip" for k, v in headers.items()):
        body = gzip.decompress(body)
    return Response(status, headers, body)
