"""A small JSON-over-HTTP client on httpx: one connection pool per target, explicit timeouts.

It never raises for an HTTP status (the caller decides what 4xx and 5xx mean for its target); it
raises `TransportError` when no answer came at all (refused, reset, timed out), which every caller
treats as retryable.

A client holds one target's credentials (its headers, or a token in its base URL) and sends them
only to that target: every request's URL, a URL taken from a payload included (a MoySklad
`meta.href`), must be under the base URL (`under_base`: same scheme, host and port, under its
path), or it is refused (`ForeignUrl`), logged masked, and nothing is sent. Redirects are not
followed (the client would send every header, credentials included, wherever a 3xx points): a 3xx
is answered to the caller like any other status. Cookies a target sets are not kept or sent back.

A client keeps its connections open between requests (up to `CONNECTIONS_MAX`, an idle one for
`IDLE_CONNECTION_S`) and may be shared by threads; `close()` closes them when the adapters stop.
Connecting, sending, each wait for the answer's bytes and the wait for a free connection of the pool
are each limited to the target's timeout. An answer's body is read, decompressed, up to
`RESPONSE_BYTES_MAX`; what is beyond that is not read (a warning is logged, and the body handed
over is cut there).
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.masking import mask, secret_safe_logger

log = secret_safe_logger("adapters.http")
# httpx logs each request's URL at INFO, and a Bitrix webhook URL holds its token: masked as ours.
# And only its warnings by default: a line per request would bury the adapters' own (a full push of
# 10,000 SKUs is 600 requests).
secret_safe_logger("httpx").setLevel(logging.WARNING)

RESPONSE_BYTES_MAX = 64 * 1024 * 1024
# A whole answer, from the request sent to its last byte, within this many of the client's timeouts:
# each read has its own, and a target that trickles bytes just inside it held a worker for as long
# as 64 MiB took to arrive so.
WHOLE_ANSWER_TIMEOUTS = 4
# Per target: more than the threads that share one client (a worker per target, the inbox, a poller).
CONNECTIONS_MAX = 8
# An idle connection is closed after this long, before a server is likely to close it under us.
IDLE_CONNECTION_S = 4.0
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


class NotJson(ValueError):
    """An answer whose body is not JSON: a proxy's error page, say, answered 200."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None if empty); NotJson, naming the answer, for anything else."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            content_type = self.header("Content-Type") or "no Content-Type"
            raise NotJson(f"the answer (HTTP {self.status}, {content_type}) is not JSON") from None

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
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(connect=timeout_s, read=timeout_s, write=timeout_s, pool=timeout_s),
            limits=httpx.Limits(
                max_connections=CONNECTIONS_MAX,
                max_keepalive_connections=CONNECTIONS_MAX,
                keepalive_expiry=IDLE_CONNECTION_S,
            ),
            cookies=_no_cookies(),
            # The system's certificate authorities, as Python's own HTTPS uses (httpx's default is
            # certifi's bundle, which would refuse a portal signed by a company's own authority).
            verify=ssl.create_default_context(),
        )

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
        deadline = time.monotonic() + WHOLE_ANSWER_TIMEOUTS * self.timeout_s
        try:
            with self._client.stream(method, url, content=data, headers=all_headers) as answer:
                if answer.is_redirect:
                    log.warning(
                        "not following a redirect (HTTP %d) from %s to %s",
                        answer.status_code,
                        url,
                        answer.headers.get("Location"),
                    )
                body = _read_capped(answer, f"{method} {url}", deadline)
                return Response(answer.status_code, dict(answer.headers.items()), body)
        except (httpx.HTTPError, OSError) as error:
            raise TransportError(
                mask(f"{method} {self.url(path)}: {error or type(error).__name__}")
            ) from error
        except RuntimeError as error:  # httpx's answer to a request after close(): the adapters stop
            if not self._client.is_closed:
                raise
            raise TransportError(mask(f"{method} {self.url(path)}: the client is closed")) from error

    def close(self) -> None:
        """Closes the kept connections; a request after this opens none (it raises)."""
        self._client.close()


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that takes no cookie: a target's cookies are neither kept nor sent back."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _read_capped(answer: httpx.Response, what: str, deadline: float) -> bytes:
    """The decompressed body, up to RESPONSE_BYTES_MAX (a compressed answer cannot grow past it),
    by the monotonic `deadline` (else httpx's ReadTimeout)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in answer.iter_bytes():
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout(f"the whole answer to {what} did not arrive in time")
        chunks.append(chunk)
        size += len(chunk)
        if size > RESPONSE_BYTES_MAX:
            log.warning("the answer to %s is larger than %d bytes: cut there", what, RESPONSE_BYTES_MAX)
            break
    return b"".join(chunks)[:RESPONSE_BYTES_MAX]
