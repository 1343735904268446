"""Secrets never leave the adapters: `mask` is the one function every text shown or stored passes.

What it replaces with `***`:

- the secret parts of URLs, by their shape, whether or not they were configured: the user info of
  `scheme://user:password@host`, the token of a Bitrix webhook URL (`/rest/<user>/<token>/...`),
  the secret segment of our own webhook paths (`/moysklad/webhook/<secret>`,
  `/wms/status/<secret>`), and query values named like secrets (`token=`, `key=`, ...);
- every secret the adapters were configured with (`remember`, `remember_settings`), by value,
  wherever it appears: tokens, API keys, webhook secrets and signing keys. A value shorter than
  `SECRET_CHARS_MIN` is not masked by value (it would mask ordinary words); the shapes above still
  mask it where it stands in a URL.

Where it is applied: every record of an `adapters.*` logger (`secret_safe_logger`, a filter that
masks the message and its traceback), the error and detail columns the adapters write
(`adapter_positions.last_error`, `adapter_parked.reason`, `adapter_inbox.last_error`,
`adapter_journal`), what `ledger adapters status` prints and `/metrics`, and the messages of the
errors the HTTP client raises (they name the URL).
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.config import Settings

MASK = "***"
SECRET_CHARS_MIN = 8

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@")
_BITRIX_TOKEN = re.compile(r"(/rest/[^/\s?#]+/)[^/\s?#]+")
_WEBHOOK_SECRET = re.compile(r"(/(?:moysklad/webhook|wms/status)/)[^/\s?#'\"]+")
_SECRET_QUERY_NAMES = (
    "access_token",
    "auth",
    "token",
    "key",
    "api_key",
    "apikey",
    "secret",
    "password",
    "signature",
)
_SECRET_QUERY = re.compile(rf"(?i)([?&;](?:{'|'.join(_SECRET_QUERY_NAMES)})=)[^&\s#'\"]+")


class _Known:
    """The values configured as secrets in this process: only ever added to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: tuple[str, ...] = ()  # longest first: a secret holding another is masked whole


_KNOWN = _Known()


def mask(text: str) -> str:
    """The text with every secret it holds replaced by `***`."""
    for secret in _KNOWN.values:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _BITRIX_TOKEN.sub(rf"\1{MASK}", text)
    text = _WEBHOOK_SECRET.sub(rf"\1{MASK}", text)
    return _SECRET_QUERY.sub(rf"\1{MASK}", text)


def remember(*secrets: str | None) -> None:
    """Masks these values from now on in this process (and their URL-encoded forms)."""
    new = set()
    for secret in secrets:
        if secret and len(secret) >= SECRET_CHARS_MIN:
            new.update({secret, urllib.parse.quote(secret, safe="")})
    if not new:
        return
    with _KNOWN.lock:
        _KNOWN.values = tuple(sorted(set(_KNOWN.values) | new, key=len, reverse=True))


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a configured URL: its user info, a Bitrix token, secret query values."""
    if not url:
        return []
    parts = urllib.parse.urlsplit(url)
    found = [value for value in (parts.username, parts.password) if value]
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) >= 3 and segments[0] == "rest":  # https://<site>/rest/<user>/<token>/
        found.append(segments[2])
    found += [
        value for name, value in urllib.parse.parse_qsl(parts.query) if name.lower() in _SECRET_QUERY_NAMES
    ]
    return found


def _password(url: str) -> str | None:
    return urllib.parse.urlsplit(url).password


def remember_settings(settings: Settings) -> None:
    """Every secret of the adapters' settings (ledger/config.py), and the database's password."""
    signing_key = settings.wms_webhook_signing_key
    remember(
        *url_secrets(settings.bitrix_webhook_url),
        *url_secrets(settings.moysklad_base_url),
        *url_secrets(settings.wms_base_url),
        # The password only: the user name is not a secret, and is often a word that must stay
        # readable ("postgres" masked by value made every postgresql:// URL read ***ql://).
        _password(settings.database_url),
        settings.moysklad_token,
        settings.moysklad_webhook_secret,
        settings.wms_api_key,
        settings.wms_webhook_secret,
        signing_key.get_secret_value() if signing_key is not None else None,
    )


class _MaskSecrets(logging.Filter):
    """Masks a record's message and traceback before any handler sees it."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: shown as they are
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        record.exc_info = None  # the masked exc_text is what handlers print
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


_FILTER = _MaskSecrets()


def secret_safe_logger(name: str) -> logging.Logger:
    """The logger `name`, whose records are masked (a filter on a logger sees only its own records,
    so every adapters module takes its logger from here)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
