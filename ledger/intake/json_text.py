"""JSON text as producers send it. RFC 8259 §8.1: a sender must not put a UTF-8 byte order mark
before JSON, and a parser may ignore one "in the interests of interoperability". Windows tools
(Notepad, PowerShell's `Out-File`, .NET's UTF-8 writers) and many 1C exports put one there, and
orjson refuses it: so every way in (HTTP bodies, Kafka records, `ledger import` files) drops one
mark at the very start, and nothing anywhere else.
"""

from __future__ import annotations

UTF8_BOM = b"\xef\xbb\xbf"


def without_bom(raw: bytes) -> bytes:
    return raw[3:] if raw[:3] == UTF8_BOM else raw
