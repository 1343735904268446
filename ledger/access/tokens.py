"""Tokens as secrets: how one is made, recognised and hashed. The database keeps only the hash.

A token is `sl_live_` and 43 characters of URL-safe base64: 256 random bits from the operating
system's generator. The prefix lets secret scanners (GitHub's, gitleaks, trufflehog) find a leaked
one with a plain pattern (`sl_live_[A-Za-z0-9_-]{43}`). Its SHA-256 is what is stored and looked up:
a token this random needs no slow password hash, since nobody can guess one to test against it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "sl_live_"
TOKEN_RANDOM_BYTES = 32
TOKEN_CHARS = len(TOKEN_PREFIX) + 43  # base64 of 32 bytes, unpadded
BEARER = b"bearer "


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def token_digest(token: str) -> str:
    """The stored form of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_digest(stored: str, presented: str) -> bool:
    """Compared in constant time, so that the time taken says nothing of how much matched."""
    return hmac.compare_digest(stored, presented)


def bearer_token(authorization: bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None when there is none or
    it cannot be one of ours (wrong scheme, wrong length or prefix)."""
    if authorization is None or len(authorization) != len(BEARER) + TOKEN_CHARS:
        return None
    if authorization[: len(BEARER)].lower() != BEARER:
        return None
    token = authorization[len(BEARER) :].decode("latin-1")
    return token if token.startswith(TOKEN_PREFIX) else None
