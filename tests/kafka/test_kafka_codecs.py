"""The intake reads record batches compressed with any codec a producer or a topic may choose: one it
could not open would fail every poll of its partition. The batches themselves are read in
test_kafka_intake.py; here, a consumer that could not read one is refused before it is built."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.cli_errors import CommandError
from ledger.config import Settings
from ledger.kafka import clients
from ledger.kafka.cli import check_codecs


def test_a_consumer_that_could_not_open_a_compressed_batch_is_not_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert clients.missing_codecs_reason() is None, "pyproject.toml installs every codec kafka-python reads"
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(clients, "KafkaConsumer", lambda **config: built.append(config))
    monkeypatch.setitem(clients._CODECS, "zstd", lambda: False)
    with pytest.raises(ValueError, match="compressed with zstd"):
        clients.new_consumer(Settings(kafka_bootstrap="broker-1:9092"))
    assert built == []


def test_a_start_without_a_codec_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    check_codecs()  # every codec is installed here
    monkeypatch.setitem(clients._CODECS, "lz4", lambda: False)
    with pytest.raises(CommandError, match="compressed with lz4"):
        check_codecs()
