"""A Kafka header key sent as any bytes. kafka-python's producer and record builder encode a key
from text; the protocol does not check its bytes, and producers on librdkafka's C API or Go's
clients send keys that are not UTF-8 (ledger/kafka/header_keys.py reads them)."""

from __future__ import annotations


class RawHeaderKey(str):
    """A header key written as `raw`, whatever kafka-python would encode it as."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderKey:
        key = super().__new__(cls, raw.decode("latin-1"))
        key.raw = raw
        return key

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw
