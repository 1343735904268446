"""How a browser holds its token for the console: a login form, then a cookie only /ui reads.

The console's pages are rendered on the server, so the browser must send the token with a plain
navigation, where it cannot set `Authorization`. The login form (`/ui/login`) takes a token, checks
it with the token book, and keeps it in a cookie that is HttpOnly (no script reads it),
SameSite=Strict (no other site's page or link sends it), scoped to Path=/ui, and gone when the
browser closes. This wrapper sits in front of the token gate (ledger/api/gate.py): on a GET of a
/ui page without an `Authorization` header it turns the cookie into one, so that the gate checks
it exactly as it checks any request (validity, revocation, rate). The cookie is never read for
anything else: not for the API, not for any method that changes something. So a forged
cross-site request has nothing to reach (the console has no write action), and the login form
refuses a POST from another origin (login CSRF).

Without a valid token every /ui page answers 401, as CONTRACT §5 says, the form's own address and
the logout included: to a browser with the login form as its body, to a program as problem+json
(ledger/api/console/negotiation.py). With the service open (no token exists and none is
required) none of this applies: no login.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import RedirectResponse, Response

from ledger.access.book import TokenBook, Unauthenticated
from ledger.access.scopes import Forbidden
from ledger.access.tokens import BEARER, bearer_token
from ledger.api.console.negotiation import wants_page
from ledger.api.console.rendering import page
from ledger.api.problems import Problem, access_problem, problem_response
from ledger.api.telemetry import NOTED_INSIDE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONSOLE_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
LOGOUT_PATH = "/ui/logout"
COOKIE_NAME = "ledger_console"
SESSION_KEY = "ledger.console_session"  # in a request's scope: its token came from the login cookie
RETURN_TO_CHARS_MAX = 2048  # the page asked for, kept in the form; a longer one returns to /ui
# A form with a token and the page to return to: form encoding may triple the page's characters
# (`%` is sent as `%25`), and a body cut short would refuse a valid token.
LOGIN_BODY_BYTES_MAX = 3 * RETURN_TO_CHARS_MAX + 1024
LOGIN_FIELDS = frozenset({"token", "next"})  # the form's fields; any other sent is ignored
# The console's pages and assets are sent compressed to a browser that accepts it: a timeline page
# of 500 points and uPlot shrink to about a quarter (a shop's tablet may be on a slow line).
GZIP_BYTES_MIN = 1024
_READ_METHODS = frozenset({"GET", "HEAD"})


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


def _cookie(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    for part in raw.decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == COOKIE_NAME and value:
            return value
    return None


def _over_https(scope: Scope) -> bool:
    """Whether the browser is on https, by any sign of it. uvicorn's `scheme` says https only when
    the proxy that ended TLS is one it trusts (FORWARDED_ALLOW_IPS, 127.0.0.1 by default), and the
    README's nginx in front of Docker's published port reaches the API from the bridge's address:
    there it said http, and the cookie that holds the token went without Secure. So the proxy's
    X-Forwarded-Proto counts from any address, as does the login form's Origin: a sign a client
    forges only keeps its own cookie off plain http."""
    if scope.get("scheme") == "https":
        return True
    proto = _header(scope, b"x-forwarded-proto")
    if proto is not None and proto.split(b",", 1)[0].strip().lower() == b"https":
        return True
    origin = _header(scope, b"origin")
    return origin is not None and origin.lower().startswith(b"https://")


def _cookie_header(scope: Scope, token: str, *, clear: bool = False) -> str:
    secure = "; Secure" if _over_https(scope) else ""
    value, lifetime = ("", "; Max-Age=0") if clear else (token, "")
    return f"{COOKIE_NAME}={value}; Path={CONSOLE_PREFIX}; HttpOnly; SameSite=Strict{secure}{lifetime}"


def _same_origin(scope: Scope) -> bool:
    """A login POST or a logout from a page of this service: its Origin (when the browser sends
    one) names the Host it was sent to. Sec-Fetch-Site, where sent, must not say another site."""
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return False
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    host = _header(scope, b"host") or b""
    return origin.split(b"://", 1)[-1] == host


def _referred_here(scope: Scope) -> bool:
    """A logout link followed from a page of this service, as far as the Referer tells (a browser
    that sends no Sec-Fetch-Site still sends the origin of another site's page by default): no
    Referer, or one whose host is the Host the link was sent to."""
    referer = _header(scope, b"referer")
    if referer is None:
        return True
    host = _header(scope, b"host") or b""
    return referer.split(b"://", 1)[-1].split(b"/", 1)[0] == host


def return_to(target: str | None) -> str:
    """Where a login sends the browser: the console page it was asked for, if the form says one,
    else the console's home. Only a path of this console is taken (no scheme, no host, no `//`
    or backslash a browser would read as another site, no dot segment that leaves /ui), so the
    form cannot send anyone away."""
    if (
        not target
        or len(target) > RETURN_TO_CHARS_MAX
        or not (target == CONSOLE_PREFIX or target.startswith((CONSOLE_PREFIX + "/", CONSOLE_PREFIX + "?")))
        or "//" in target
        or "\\" in target
        or any(ord(char) < 0x21 or ord(char) == 0x7F for char in target)
        or "/." in target  # a dot segment (`/ui/../v1`) leaves the console once the browser resolves it
        or "%2e" in target.lower()
        or target.startswith((LOGIN_PATH, LOGOUT_PATH))
    ):
        return CONSOLE_PREFIX
    return target


def _asked_for(scope: Scope) -> str:
    """The path and query a page request asked for, as the browser sent them."""
    query: bytes = scope.get("query_string") or b""
    path: bytes = scope.get("raw_path") or scope.get("path", "").encode()
    return (path + (b"?" + query if query else b"")).decode("latin-1")


def _login_form(
    message: str | None, status_code: int, *, clear_cookie: bool, scope: Scope, next_page: str | None = None
) -> Response:
    """The login form to a browser; to a program, the refusal as problem+json (CONTRACT §5). The
    form keeps the page asked for, and a login returns there."""
    response: Response
    if wants_page(scope["headers"]):
        headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else {}
        asked = _asked_for(scope) if next_page is None else next_page
        response = page("login.html", status_code, headers, message=message, next=return_to(asked))
    elif status_code == 401:
        detail = message or "a console page needs a token: send it as a Bearer token, or log in at /ui/login"
        response = problem_response(access_problem(Unauthenticated(detail)), scope.get("path"))
    else:
        response = problem_response(access_problem(Forbidden(message or "refused")), scope.get("path"))
    if clear_cookie:
        response.headers["set-cookie"] = _cookie_header(scope, "", clear=True)
    return response


def _not_allowed(scope: Scope, detail: str, allow: str) -> Response:
    problem = Problem(405, "method-not-allowed", "method not allowed", detail, headers={"Allow": allow})
    return problem_response(problem, scope.get("path"))


async def _form_fields(receive: Receive) -> dict[str, str]:
    """The login form's fields (the first of each name); none for a body over the limit."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > LOGIN_BODY_BYTES_MAX:
            return {}
        if not message.get("more_body"):
            break
    # Every field is read (the body is bounded above) and the form's own kept, wherever they stand:
    # parse_qs's own limit (max_num_fields) raised on a form with more, answered 500, and the first
    # few fields alone missed a token sent after those a browser extension added.
    fields = parse_qs(body.decode("latin-1"))
    return {name: values[0] for name, values in fields.items() if values and name in LOGIN_FIELDS}


class ConsoleSession:
    """The console's login, logout and cookie, in front of the token gate."""

    def __init__(self, app: ASGIApp, book: TokenBook, *, required: bool) -> None:
        self.app = app
        self.compressed = GZipMiddleware(app, minimum_size=GZIP_BYTES_MIN)
        self.book = book
        self.required = required

    def _tokens_apply(self) -> bool:
        return self.required or self.book.any_tokens

    def _valid(self, token: str | None) -> bool:
        try:
            self.book.grant_for(token)
        except Unauthenticated:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if path == LOGIN_PATH:
            response = await self._login(scope, receive)
        elif path == LOGOUT_PATH:
            if self._tokens_apply() and _same_origin(scope) and _referred_here(scope):
                response = _login_form("Logged out.", 401, clear_cookie=True, scope=scope)
            else:
                # A link on another site logs nobody out: a browser applies the cleared cookie
                # on a cross-site navigation, SameSite=Strict notwithstanding.
                response = RedirectResponse(CONSOLE_PREFIX, 303)
        elif not self._tokens_apply() or _header(scope, b"authorization") is not None:
            await self.compressed(scope, receive, send)
            return
        else:
            token = _cookie(scope)
            if token is None:
                response = _login_form(None, 401, clear_cookie=False, scope=scope)
            elif not self._valid(token) or bearer_token(BEARER + token.encode("latin-1")) is None:
                response = _login_form(
                    "Your token is no longer valid: enter a token.", 401, clear_cookie=True, scope=scope
                )
            elif scope["method"] not in _READ_METHODS:
                response = _not_allowed(scope, "the console only reads", "GET, HEAD")
            else:
                headers = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
                headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
                inner = {**scope, "headers": headers, SESSION_KEY: True}
                try:
                    await self.compressed(inner, receive, send)
                finally:
                    # The grant and the route reach the request telemetry outside, so that the access
                    # log names who read the page; the headers stay as sent.
                    scope.update({key: inner[key] for key in NOTED_INSIDE if key in inner})
                return
        await response(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive) -> Response:
        if not self._tokens_apply():
            return RedirectResponse(CONSOLE_PREFIX, 303)  # the service is open: nothing to log in to
        if scope["method"] in _READ_METHODS:
            return _login_form(None, 401, clear_cookie=False, scope=scope)
        if scope["method"] != "POST":
            return _not_allowed(scope, "log in with a POST of the form", "GET, HEAD, POST")
        if not _same_origin(scope):
            return _login_form("Log in from this service's own page.", 403, clear_cookie=False, scope=scope)
        fields = await _form_fields(receive)
        token = fields.get("token", "").strip() or None
        if token is None or not self._valid(token):
            return _login_form(
                "That token is not valid.", 401, clear_cookie=False, scope=scope, next_page=fields.get("next")
            )
        response = RedirectResponse(return_to(fields.get("next")), 303)
        response.headers["set-cookie"] = _cookie_header(scope, token)
        return response
