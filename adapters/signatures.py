"""Signed webhooks: an HMAC-SHA256 of the raw body in a header, as the WMS may send its statuses.

The scheme is configured (LEDGER_WMS_WEBHOOK_SIGNATURE_*): the header's name (default
`X-Signature`), a prefix before the digest (default `sha256=`) and the digest's encoding (`hex`,
default, or `base64`). So `X-Signature: sha256=<hex of HMAC-SHA256(key, raw body)>`, the form
GitHub's `X-Hub-Signature-256` uses; Shopify's `X-Shopify-Hmac-Sha256` is header
`X-Shopify-Hmac-Sha256`, no prefix, `base64`.

The signature covers the body only, not a time: a recorded delivery can be sent again, which
changes nothing (a delivery is stored once per WMS order and status, and the ledger dedupes its
event ids). Compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["hex", "base64"]


@dataclass(frozen=True, slots=True)
class SignatureScheme:
    key: bytes
    header: str = "X-Signature"
    prefix: str = "sha256="
    encoding: Encoding = "hex"

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a signing key is needed to check signed webhooks")

    def sign(self, body: bytes) -> str:
        """The header value a sender holding the key puts on this body."""
        digest = hmac.new(self.key, body, hashlib.sha256).digest()
        text = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()
        return self.prefix + text

    def verifies(self, body: bytes, header_value: str | None) -> bool:
        if header_value is None:
            return False
        expected = self.sign(body).encode()
        # Case is not part of a hex digest; base64's case is, so only hex is compared lowered.
        given = header_value.strip()
        if self.encoding == "hex" and given.startswith(self.prefix):
            given = self.prefix + given[len(self.prefix) :].lower()
        return hmac.compare_digest(expected, given.encode("utf-8", "replace"))
