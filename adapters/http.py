"""A small JSON-over-HTTP client on the standard library, with explicit timeouts.

It never raises for an HTTP status (the caller decides what 4xx and 5xx mean for its target); it
raises `TransportError` when no answer came at all (refused, reset, timed out), which every caller
treats as retryable.

A client holds one target's credentials (its headers, or a token in its base URL) and sends them
only to that target: every request's URL, a URL taken from a payload included (a MoySklad
`meta.href`), must be under the base URL (`under_base`: same scheme, host and port, under its
path), or it is refused (`ForeignUrl`), logged masked, and nothing is sent. Redirects are not
followed (urllib would send every header, credentials included, wherever a 3xx points): a 3xx is
answered to the caller like any other status.
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

from adapters.masking import mask, secret_safe_logger

log = secret_safe_logger("adapters.http")

RESPONSE_BYTES_MAX = 64 * 1024 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}


class TransportError(Exception):
    """No HTTP answer: connection refused or reset, DNS failure, timeout. The message is masked."""


class ForeignUrl(ValueError):
    """A URL that is not under the client's base URL: refused, nothing was sent. The message is masked."""

    def __init__(self, url: str, base_url: str) -> None:
        super().__init__(
            f"refused to send a request to {mask(url)}: not under the configured {mask(base_url)} "
            "(scheme, host, port and path must match)"
        )


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    return scheme, host, parts.port or DEFAULT_PORTS.get(scheme)


def _has_dot_segment(path: str) -> bool:
    """A `.` or `..` segment, percent-encoded or not, which a server may resolve out of the prefix."""
    for segment in path.split("/"):
        decoded = urllib.parse.unquote(segment).replace("\\", "/")
        if any(piece in (".", "..") for piece in decoded.split("/")):
            return True
    return False


def under_base(base_url: str, url: str) -> bool:
    """Is `url` one the client of `base_url` may send its credentials to? Same scheme, host and
    port; its path under the base's path; no user info, no dot segments, no whitespace."""
    if any(ch.isspace() or not ch.isprintable() or ch == "\\" for ch in url):
        return False
    try:
        base, target = urllib.parse.urlsplit(base_url), urllib.parse.urlsplit(url)
        if _origin(base) != _origin(target):
            return False
    except ValueError:  # a port that is not a number
        return False
    prefix = base.path if base.path.endswith("/") else base.path + "/"
    return (
        target.scheme.lower() in DEFAULT_PORTS
        and target.username is None
        and target.password is None
        and (target.path + "/").startswith(prefix)
        and not _has_dot_segment(target.path)
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx comes back to the caller as it is; its Location is not visited with our headers."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        log.warning("not following a redirect (HTTP %d) from %s to %s", code, req.full_url, newurl)


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
        self._opener = urllib.request.build_opener(_NoRedirects)

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
        url = self.url(path, params)
        if not under_base(self.base_url, url):
            refused = ForeignUrl(url, self.base_url)
            log.warning("%s", refused)
            raise refused
        data = None
        all_headers = dict(self.headers)
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                return _response(answer.status, dict(answer.headers.items()), answer.read(RESPONSE_BYTES_MAX))
        except urllib.error.HTTPError as error:
            return _response(error.code, dict(error.headers.items()), error.read(RESPONSE_BYTES_MAX))
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            raise TransportError(mask(f"{method} {self.url(path)}: {error}")) from error


def _response(status: int, headers: dict[str, str], body: bytes) -> Response:
    if any(k.lower() == "content-encoding" and v.lower() == "gzip" for k, v in headers.items()):
        body = gzip.decompress(body)
    return Response(status, headers, body)
