"""The development tools' commands, plugged into the `ledger` command line through the
`stock_ledger.commands` entry point (pyproject.toml): `ledger simulate` and `ledger fakes`. They
exist where devtools/ is installed, a source checkout; the product's packages never import them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ledger.config import Settings

PORT_MAX = 65_535
# What the model retailer and its traffic may be: beyond these a run is a typo, not a test.
PARTITIONS_MAX = 1_000
BATCH_MAX = 1_000  # CONTRACT §3: at most 1,000 events an array
STORES_MAX = 10_000
SKUS_MAX = 1_000_000
EVENTS_MAX = 1_000_000_000
RATE_MAX = 1_000_000.0
LIFETIME_S_MAX = 86_400.0
SECONDS_MAX = 31_536_000.0


# The argument types come from ledger.cli_errors when a value is read, not when the command line
# is built: an earlier release's `ledger` loads these commands too (the rolling upgrade's test runs
# one beside this checkout), and its cli_errors may not have them.
def int_from(low: int, high: int) -> Callable[[str], int]:
    def integer(text: str) -> int:
        from ledger import cli_errors

        return cli_errors.int_from(low, high)(text)

    return integer


def number_from(low: float, high: float) -> Callable[[str], float]:
    def number(text: str) -> float:
        from ledger import cli_errors

        return cli_errors.number_from(low, high)(text)

    return number


share = number_from(0.0, 1.0)


# The tools are imported when run, so that `ledger --help` does not load Kafka and the fake servers.
def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.simulate import command

    return command(args, settings)


def _fakes(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.fakes.demo import command

    return command(args, settings)


def register(commands: Any) -> None:
    """Adds `ledger simulate` and `ledger fakes` (the `stock_ledger.commands` entry point)."""
    simulate = commands.add_parser(
        "simulate", help="send a model retailer's stock events to Kafka or HTTP (development tool)"
    )
    simulate.add_argument("--to", choices=("kafka", "http"), default="kafka", help="where the events go")
    simulate.add_argument("--bootstrap", help="overrides LEDGER_KAFKA_BOOTSTRAP (--to kafka)")
    simulate.add_argument("--topic", help="overrides LEDGER_KAFKA_TOPIC (--to kafka)")
    simulate.add_argument("--create-topic", action="store_true", help="create the topic if it is missing")
    simulate.add_argument(
        "--partitions", type=int_from(1, PARTITIONS_MAX), default=6, help="partitions of a topic it creates"
    )
    simulate.add_argument("--url", default="http://127.0.0.1:8000", help="the ledger's base URL (--to http)")
    simulate.add_argument(
        "--batch", type=int_from(1, BATCH_MAX), default=100, help="envelopes per HTTP request (--to http)"
    )
    simulate.add_argument(
        "--stores", type=int_from(1, STORES_MAX), default=10, help="shops of the model retailer"
    )
    simulate.add_argument(
        "--skus", type=int_from(1, SKUS_MAX), default=200, help="SKUs of the model retailer"
    )
    simulate.add_argument("--events", type=int_from(1, EVENTS_MAX), default=10_000, help="records to send")
    simulate.add_argument(
        "--rate", type=number_from(0, RATE_MAX), default=0, help="records per second; 0: as fast as it goes"
    )
    simulate.add_argument("--duplicates", type=share, default=0.02, help="share of records sent twice")
    simulate.add_argument("--junk", type=share, default=0.005, help="share of unreadable records")
    simulate.add_argument("--expiring", type=share, default=0.1, help="share of reservations left to expire")
    simulate.add_argument(
        "--expire-after-s",
        type=number_from(0.001, LIFETIME_S_MAX),
        default=5.0,
        help="lifetime of a reservation left to expire",
    )
    simulate.add_argument("--seed", type=int, default=1, help="the same seed sends the same traffic")
    simulate.add_argument("--run-id", help="prefix of the event ids (default: random)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(handler=_simulate)

    fakes = commands.add_parser(
        "fakes", help="start local fake Bitrix, MoySklad and WMS servers for a demo (development tool)"
    )
    fakes.add_argument(
        "--bitrix-port",
        type=int_from(0, PORT_MAX),
        default=8181,
        help="the fake Bitrix's port (0: any free one)",
    )
    fakes.add_argument(
        "--moysklad-port", type=int_from(0, PORT_MAX), default=8182, help="the fake MoySklad's port"
    )
    fakes.add_argument("--wms-port", type=int_from(0, PORT_MAX), default=8183, help="the fake WMS's port")
    fakes.add_argument(
        "--seconds", type=number_from(0, SECONDS_MAX), help="stop after this long (default: until Ctrl-C)"
    )
    fakes.set_defaults(handler=_fakes)
