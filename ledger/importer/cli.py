"""`ledger import FILE`: records a JSON Lines file of envelopes (CONTRACT §7), as register() adds it.

Exit codes: 0 when every line was recorded (accepted or rejected: both are entries of the log) or
was a duplicate; 1 when any line was invalid (or refused by the writer), those lines reported with
their number and not recorded, every other line recorded; 2 with one line on stderr for what stops
the command (a file that cannot be read, a database that cannot be used, a writer that stayed
unavailable through every retry: what came before that line is recorded, and running the same
import again finishes it); 130 when interrupted (likewise).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from ledger.cli_errors import EXIT_INTERRUPTED, CommandError
from ledger.config import Settings
from ledger.existing_ledger import missing_sqlite_file

if TYPE_CHECKING:
    from ledger.importer.recording import Summary

EXIT_INCOMPLETE = 1
STDIN = "-"


def register(commands: argparse._SubParsersAction[Any]) -> None:
    command = commands.add_parser(
        "import",
        help="record a file of CloudEvents envelopes (JSON Lines), idempotently",
        description="Records each line of FILE (one CloudEvents envelope per line, in order) through "
        "the same rules as POST /v1/events. Lines already recorded (same source and id) answer "
        "`duplicate`, so running it again records nothing new. Exit 0: every line recorded or a "
        "duplicate; 1: some lines were invalid (reported, not recorded); 2: it could not run.",
    )
    command.add_argument("file", metavar="FILE", help="the JSON Lines file; - reads standard input")
    command.add_argument("--quiet", action="store_true", help="no progress on stderr")
    command.add_argument("--json", action="store_true", help="the summary as one JSON object on stdout")
    command.add_argument(
        "--check",
        action="store_true",
        help="read and check every line and say what would be recorded, by event type and store; "
        "record nothing and open no database (exit 1 when a line is invalid)",
    )
    command.set_defaults(handler=import_command)


@contextlib.contextmanager
def _opened(path: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """The file and its size (None for standard input). A missing or unreadable file is the
    OSError main() tells in one line."""
    if path == STDIN:
        yield sys.stdin.buffer, None
        return
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        yield file, size or None


def import_command(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, as every command's parts are: `ledger` builds its parser from every command's
    # register(), and each other command (and --help, --version) would otherwise load the writer.
    from ledger.bootstrap import intake_limits, tune_gc
    from ledger.importer.progress import stderr_progress
    from ledger.importer.reading import FileProgress, read_lines
    from ledger.importer.recording import Importer, ImportLimits
    from ledger.importer.writers import import_writer

    # As in the serving processes, and rarer: the writer's memory holds a level per store and SKU
    # seen, and every full collection would walk them all; and the recording thread, back from
    # PostgreSQL, gets the interpreter from the reading thread within the switch interval, not 5 ms.
    tune_gc(batch_job=True)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)

    if args.check:
        return _check(args, settings)
    # Not refused (history is often imported before a ledger first serves), but said, whatever
    # --quiet says: run in another directory than `ledger serve`, a relative path is another ledger.
    new_ledger = missing_sqlite_file(settings.database_url)
    limits = ImportLimits(
        batch_events_max=settings.import_batch_events_max,
        batches_ahead_max=settings.import_batches_ahead_max,
        retries_max=settings.import_retries_max,
        retry_wait_s_max=settings.import_retry_wait_ms_max / 1000,
    )
    with _opened(args.file) as (file, size), import_writer(settings) as chosen:
        if new_ledger is not None:
            print(
                f"ledger import: no ledger at {os.path.abspath(new_ledger)}: made a new one", file=sys.stderr
            )
        progress = stderr_progress(size, settings.import_progress_interval_s, quiet=args.quiet)
        if not args.quiet:
            progress.say(f"importing {args.file} {chosen.description}")
        file_progress = FileProgress()
        lines = read_lines(file, intake_limits(settings), settings.import_line_bytes_max, file_progress)
        importer = Importer(chosen.writer, limits, progress)
        try:
            summary = importer.run(lines, file_progress)
        except KeyboardInterrupt:
            summary = importer.summary
            # The batches read ahead are recorded before run() returns; the lines after them are not.
            summary.stopped = f"interrupted: every line up to {importer.done_through_line} has its outcome"
        finally:
            progress.close()
    _print_summary(args.file, summary, as_json=args.json)
    if summary.stopped is not None:
        if summary.stopped.startswith("interrupted"):
            print(f"ledger import: {summary.stopped}; run it again to finish", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise CommandError(f"{summary.stopped}; what came before is recorded: run it again to finish")
    return 0 if summary.complete else EXIT_INCOMPLETE


def _check(args: argparse.Namespace, settings: Settings) -> int:
    """What the import would send to the writer, read exactly as the import reads it; nothing is
    recorded. Whether an event is new, accepted or rejected only the writer can say, at its turn."""
    from ledger.bootstrap import intake_limits
    from ledger.importer.reading import FileProgress, InvalidLine, read_lines

    by_type: Counter[str] = Counter()
    stores: set[str] = set()
    invalid = 0
    with _opened(args.file) as (file, _):
        lines = read_lines(file, intake_limits(settings), settings.import_line_bytes_max, FileProgress())
        for line in lines:
            if isinstance(line, InvalidLine):
                invalid += 1
                print(f"line {line.line_no}: invalid: {line.reason}", file=sys.stderr)
                continue
            by_type[line.event.type.value] += 1
            stores.add(line.event.store_id)
    valid = sum(by_type.values())
    print(
        f"checked {args.file}: {valid:,} events to send at {len(stores):,} stores, {invalid:,} invalid lines"
    )
    for event_type, count in sorted(by_type.items()):
        print(f"  {event_type:<28} {count:>12,}")
    print("nothing was recorded; run it again without --check to record them")
    return EXIT_INCOMPLETE if invalid else 0


def _print_summary(path: str, summary: Summary, *, as_json: bool) -> None:
    rate = summary.recorded / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    if as_json:
        document = {
            "file": path,
            "lines": summary.lines,
            "accepted": summary.accepted,
            "duplicate": summary.duplicate,
            "rejected": summary.rejected,
            "invalid": summary.invalid,
            "failed": summary.failed,
            "first_position": summary.first_position,
            "last_position": summary.last_position,
            "elapsed_s": round(summary.elapsed_s, 3),
            "events_per_s": round(rate, 1),
            "complete": summary.complete,
            "stopped": summary.stopped,
        }
        print(orjson.dumps(document).decode(), flush=True)
        return
    positions = (
        f", positions {summary.first_position}..{summary.last_position}"
        if summary.first_position is not None
        else ""
    )
    rows = [
        ("accepted", summary.accepted, "recorded"),
        ("duplicate", summary.duplicate, "recorded before: nothing new"),
        ("rejected", summary.rejected, "recorded with their reason, levels unchanged"),
        ("invalid", summary.invalid, "not recorded: see the lines reported above"),
    ]
    if summary.failed:
        rows.append(("failed", summary.failed, "valid, but the writer refused them: see above"))
    print(
        f"imported {path}: {summary.lines:,} lines in {summary.elapsed_s:.1f} s "
        f"({rate:,.0f} events/s){positions}"
    )
    for name, count, meaning in rows:
        print(f"  {name:<10} {count:>12,}  {meaning}")
