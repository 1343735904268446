"""The `ledger` command: serve, rebuild, and the tools around them.

Every expected failure ends a command with one line on stderr and exit 2: a handler raises
CommandError, and main() turns it, and the known operating errors (a LEDGER_* value that Settings
refuses, a file that cannot be read, a database that cannot be reached), into that line. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import re
import sqlite3
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import psycopg
from eventsourcing.persistence import DatabaseError as StoreDatabaseError
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import InternalError as StoreInternalError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from eventsourcing.persistence import ProgrammingError as StoreProgrammingError
from pydantic import ValidationError
from pydantic_settings import SettingsError

from ledger.cli_errors import EXIT_INTERRUPTED, CommandError, database_url_checked, int_from, redacted_url
from ledger.config import Settings
from ledger.existing_ledger import missing_sqlite_file, refuse_no_ledger
from ledger.importer.cli import register as register_import_command
from ledger.kafka.cli import register as register_kafka_commands
from ledger.plugins import PluginUnloadable, plugged_in
from ledger.serve_cli import register as register_serve_command
from ledger.storage.migrator import Plan, SchemaTooNew
from ledger.telemetry.logs import configure_logging
from ledger.telemetry.tracing import TracingUnavailable
from ledger.tokens_cli import register as register_token_commands

DISTRIBUTION = "stock-ledger"
COMMAND_PLUGINS = "stock_ledger.commands"  # the entry point group other packages add commands by
EXIT_USAGE = 2  # argparse's code for a usage error; every expected failure of a command uses it
VERIFY_DIFFERENT = 1  # `ledger verify` found a projection that differs from the replayed log
VERIFY_DIFFERENCES_SHOWN = 20
VERIFY_DIFFERENCES_SHOWN_MAX = 1_000_000  # each is a line of output: more is no one's reading

Handler = Callable[[argparse.Namespace, Settings], int]


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.bootstrap import open_database
    from ledger.rebuild import RebuildLimits, rebuild
    from ledger.rebuild.online import connections_at_once

    refuse_no_ledger(settings, made_by="`ledger migrate`")
    limits = RebuildLimits.from_settings(settings)
    # A pool the rebuild never waits on, whatever LEDGER_DB_POOL_SIZE (the service's) allows.
    pool_size = max(settings.db_pool_size, connections_at_once(limits))
    with database_url_checked():
        recorder = open_database(settings.model_copy(update={"db_pool_size": pool_size}))
    try:
        with _tty_bar(args.quiet, total=0, unit="entry", desc="rebuilding projections") as bar:

            def progress(phase: str, position: int, head: int) -> None:
                bar.set_description(f"rebuilding projections: {phase}", refresh=False)
                bar.total = head
                bar.n = position
                bar.refresh()

            report = rebuild(
                recorder,
                limits,
                progress,
                _opening_elsewhere(settings),
            )
    finally:
        recorder.close()
    print(
        f"rebuilt every projection from {report.entries} recorded events (up to position {report.head}) "
        f"in {report.elapsed_s:.1f} s; writes waited {report.writes_paused_s:.3f} s"
    )
    return 0


# A rebuild's other process reads the log while its loader writes a page: two connections.
REBUILD_PART_CONNECTIONS = 2


def _opening_elsewhere(settings: Settings) -> Callable[[], Any]:
    """How a rebuild's other processes open the database (picklable): without the schema's
    migrations or batch function, which the rebuild's own opening saw to."""
    from ledger.storage.opening import open_recorder

    return functools.partial(
        open_recorder,
        settings.database_url,
        REBUILD_PART_CONNECTIONS,
        settings.db_lock_timeout_s,
        create_tables=False,
        deadlock_timeout_ms=settings.db_deadlock_timeout_ms,
    )


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    """The schema migrations the database lacks: listed (--check), or applied, each on one line."""
    from ledger.storage.database_urls import sqlite_file
    from ledger.storage.migrations import LATEST_VERSION
    from ledger.storage.migrator import plan, plan_of
    from ledger.storage.opening import open_recorder

    if args.drop_other_batch_functions and args.check:
        raise CommandError("--check changes nothing and --drop-other-batch-functions drops: give one")
    if args.drop_other_batch_functions and sqlite_file(settings.database_url) is not None:
        raise CommandError("--drop-other-batch-functions is for PostgreSQL: SQLite has no functions")
    if (
        args.check and missing_sqlite_file(settings.database_url) is not None
    ):  # applies nothing, makes no file
        _print_pending(plan([]))
        return 0
    with database_url_checked():
        recorder = open_recorder(
            settings.database_url,
            2,
            settings.db_lock_timeout_s,
            create_tables=False,
            read_only=args.check,
            migration_wait_s=settings.migration_wait_s,
            deadlock_timeout_ms=settings.db_deadlock_timeout_ms,
        )
    try:
        found = plan_of(recorder)
        if args.check:
            _print_pending(found)
            return 0
        print(f"schema version {found.version}; this release knows up to {LATEST_VERSION}")
        if args.drop_other_batch_functions:
            recorder.create_table()
            dropped = recorder.drop_other_batch_functions()
            for name in dropped:
                print(f"dropped {name}")
            print(f"dropped {len(dropped)} batch function(s); kept this release's {recorder.batch_function}")
            return 0
        recorder.create_table()  # the migrations, and on PostgreSQL this release's batch function
        applied = recorder.migrations_applied
        for migration in applied:
            print(f"applied {migration.version} ({migration.kind}): {migration.name}")
        if not applied:
            print("nothing to apply")
    finally:
        recorder.close()
    return 0


def _print_pending(found: Plan) -> None:
    """`ledger migrate --check`: the schema's version and what would be applied, a line each."""
    from ledger.storage.migrations import LATEST_VERSION

    print(f"schema version {found.version}; this release knows up to {LATEST_VERSION}")
    for migration in found.pending:
        print(f"would apply {migration.version} ({migration.kind}): {migration.name}")
    if not found.pending:
        print("nothing to apply")


def _tty_bar(quiet: bool, **options: Any) -> Any:
    """A progress bar on stderr, shown only when stderr is a terminal (and --quiet is not given)."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=quiet or not sys.stderr.isatty(), **options)


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.backup import backup

    source = _embedded_database(settings, "backup", "pg_dump or pg_basebackup")
    with _tty_bar(args.quiet, unit="page", desc="backing up") as bar:

        def progress(copied: int, total: int) -> None:
            bar.total, bar.n = total, copied
            bar.refresh()

        copied = backup(
            source, args.destination, settings.backup_step_pages, settings.backup_step_pause_ms, progress
        )
    print(f"backed up {copied.events} events (up to position {copied.position}) to {args.destination}")
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.backup import restore

    target = _embedded_database(settings, "restore", "pg_restore or the base backup")
    with _tty_bar(args.quiet, unit="page", desc="restoring") as bar:

        def progress(copied: int, total: int) -> None:
            bar.total, bar.n = total, copied
            bar.refresh()

        copied = restore(args.source, target, force=args.force, progress=progress)
    print(
        f"restored {copied.events} events (up to position {copied.position}) from {args.source} into {target}"
    )
    if copied.revocations_kept:
        count = len(copied.revocations_kept)
        print(
            f"kept the revocation of {count} token{'' if count == 1 else 's'} active in the backup: "
            + ", ".join(copied.revocations_kept)
        )
    if copied.tokens_left_out:
        count = len(copied.tokens_left_out)
        print(
            f"{count} token{'' if count == 1 else 's'} made after the backup {'is' if count == 1 else 'are'} "
            f"not in it: {', '.join(copied.tokens_left_out)} (create {'it' if count == 1 else 'them'} again)"
        )
    return 0


def _embedded_database(settings: Settings, command: str, tools: str) -> str:
    """The SQLite file of LEDGER_DATABASE_URL; PostgreSQL has tools of its own (README, Backups)."""
    from ledger.storage.database_urls import sqlite_file

    path = sqlite_file(settings.database_url)
    if path is None:
        raise CommandError(
            f"`ledger {command}` is for the embedded SQLite database; on PostgreSQL use {tools} "
            "(README, Backups)"
        )
    return path


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.verify import verify

    with contextlib.ExitStack() as bars:
        shown: list[Any] = []  # (name, bar): the replay's, then each table's in turn, one at a time

        def bar(name: str, **options: Any) -> Any:
            if not shown or shown[0] != name:
                bars.close()  # the finished phase's bar stays on the screen, above the next
                shown[:] = [name, bars.enter_context(_tty_bar(args.quiet, **options))]
            return shown[1]

        def replayed(position: int, head: int) -> None:
            replay = bar("", total=head, unit="event", desc="replaying the log")
            replay.n = position
            replay.refresh()

        def compared(table: str, rows: int) -> None:
            comparison = bar(table, unit="row", desc=f"comparing {table}")
            comparison.n = rows
            comparison.refresh()

        report = verify(
            settings.database_url,
            settings.db_lock_timeout_s,
            page_entries=settings.rebuild_batch_entries,
            scratch_dir=args.scratch_dir,
            shown_max=args.differences_shown,
            replay_progress=replayed,
            compare_progress=compared,
        )
    for difference in report.shown:
        print(difference)
    rows = sum(report.rows.values())
    if report.total:
        print(
            f"{report.total} difference{'s' if report.total != 1 else ''} between the projections and a "
            f"replay of the log's {report.entries} entries (up to position {report.head}); "
            f"{len(report.shown)} shown"
        )
        return VERIFY_DIFFERENT
    print(
        f"every projection equals a replay of the log: {report.entries} entries (up to position "
        f"{report.head}), {rows} rows in {len(report.rows)} tables"
    )
    return 0


# -- commands that other packages plug in ------------------------------------------------------------


def _plug_in(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Adds the commands of the packages that declare a `stock_ledger.commands` entry point (the
    adapters; the development tools of a source checkout): this package never imports them. One
    whose package is missing (an image with the product's packages only) is left out."""
    for _, register in plugged_in(COMMAND_PLUGINS):
        register(commands)


# -- the parser, the settings and main() -----------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to an option's help, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """Every `ledger` parser (subparsers are made of the same class): defaults in --help, the name of
    the command for error lines, and a usage error in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.set_defaults(command_name=self.prog)  # the innermost subcommand's wins

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {_one_line(message)} (see {self.prog} --help)\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """As argparse's, but words left over are named with the subcommand that did not take
        them (`ledger tokens create ... days`), not with `ledger` alone."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "command_name", self.prog)
            unrecognized = _one_line(" ".join(extras))
            self.exit(EXIT_USAGE, f"{prog}: unrecognized arguments: {unrecognized} (see {prog} --help)\n")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="ledger", description="The stock ledger service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_serve_command(commands)
    migrate = commands.add_parser(
        "migrate", help="apply the schema migrations the database lacks (ledger serve also does, on start)"
    )
    migrate.add_argument(
        "--check", action="store_true", help="list the migrations that would be applied, and apply none"
    )
    migrate.add_argument(
        "--drop-other-batch-functions",
        action="store_true",
        help="PostgreSQL: drop the batch functions of earlier releases and other settings, once no "
        "instance of an earlier release runs (this release's instances make theirs again)",
    )
    migrate.set_defaults(handler=_migrate)
    rebuild = commands.add_parser("rebuild", help="rebuild every projection from the event log")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild.set_defaults(handler=_rebuild)
    backup = commands.add_parser(
        "backup", help="copy the embedded (SQLite) ledger to a new file while it runs (README, Backups)"
    )
    backup.add_argument("destination", metavar="DEST", help="the new file (never overwritten)")
    backup.add_argument("--quiet", action="store_true", help="no progress bar")
    backup.set_defaults(handler=_backup)
    restore = commands.add_parser(
        "restore", help="replace the embedded (SQLite) ledger with a backup (the service stopped)"
    )
    restore.add_argument("source", metavar="SRC", help="a file made by `ledger backup`")
    restore.add_argument("--force", action="store_true", help="replace a ledger that has recorded events")
    restore.add_argument("--quiet", action="store_true", help="no progress bar")
    restore.set_defaults(handler=_restore)
    verify = commands.add_parser(
        "verify",
        help="replay the log and compare every projection with it (read-only); exit 1 on a difference",
    )
    verify.add_argument(
        "--differences-shown",
        type=int_from(0, VERIFY_DIFFERENCES_SHOWN_MAX),
        default=VERIFY_DIFFERENCES_SHOWN,
        metavar="N",
        help="differences printed (all are counted)",
    )
    verify.add_argument(
        "--scratch-dir",
        help="where the replay is written meanwhile (default: the system's temporary directory)",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(handler=_verify)
    register_kafka_commands(commands)
    register_token_commands(commands)
    register_import_command(commands)
    _plug_in(commands)
    return parser


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a checkout run with `python -m ledger.cli`, never installed
        return "(not installed)"


def load_settings() -> Settings:
    """The settings from the environment; a value they refuse is a CommandError that names its variable."""
    try:
        return Settings()
    except ValidationError as error:
        raise CommandError("; ".join(_refused(problem) for problem in error.errors())) from None
    except SettingsError as error:  # a JSON value (LEDGER_UNITS) that does not parse
        raise CommandError(_unparsable(error)) from None


def _variable(field: object) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def _refused(problem: Any) -> str:
    if not problem["loc"]:  # a rule across settings: its message names them
        return str(problem["msg"]).removeprefix("Value error, ")
    field, *inside = problem["loc"]
    where = f" (at {'.'.join(str(part) for part in inside)})" if inside else ""
    return f"{_variable(field)}{where}: {str(problem['msg']).removeprefix('Value error, ')}"


def _unparsable(error: SettingsError) -> str:
    named = re.search(r'field "(\w+)"', str(error))
    if named is None:
        return str(error)
    return f"{_variable(named.group(1))} is not valid JSON: {error.__cause__ or error}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


CAUSE_DEPTH_MAX = 4  # how many causes deep an error is searched (the library wraps psycopg's once)


# PostgreSQL's refusals of any write, whatever it is, until someone changes the database: a privilege
# the role lacks, and a read-only database (a standby's URL given by mistake, or
# default_transaction_read_only set for maintenance; SQLSTATE 25006, an InternalError).
_REFUSALS_OF_EVERY_WRITE = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


def _refused_every_write(error: BaseException) -> bool:
    """Is this error (or what caused it) PostgreSQL's refusal of every write this role makes here?"""
    found: BaseException | None = error
    for _ in range(CAUSE_DEPTH_MAX):
        if found is None:
            return False
        if isinstance(found, _REFUSALS_OF_EVERY_WRITE):
            return True
        found = found.__cause__
    return False


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except PluginUnloadable as error:  # a command plugged in that cannot be loaded: no command is read
        print(f"ledger: {_one_line(error.message)}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    settings: Settings | None = None
    # The expected failures, each told in one line; the library errors are caught here, once.
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.kafka_log_level)
        return handler(args, settings)
    except CommandError as error:
        problem = error.message
    except (SchemaTooNew, TracingUnavailable) as error:
        problem = str(error)
    except OSError as error:  # a file that cannot be read or written, a port in use, a refused connection
        problem = f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
    except KeyboardInterrupt:
        print(f"{args.command_name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (
        StoreOperationalError,
        StoreInterfaceError,
        psycopg.OperationalError,
        sqlite3.OperationalError,
    ) as error:
        # A database locked too long, read-only, or not a file SQLite can use (disk I/O error).
        url = redacted_url(settings.database_url) if settings else "LEDGER_DATABASE_URL"
        problem = f"cannot use the database at {url}: {error}"
    except (
        psycopg.ProgrammingError,
        StoreProgrammingError,
        psycopg.InternalError,
        StoreInternalError,
    ) as error:
        # A role without the rights the command needs (PostgreSQL's "permission denied for schema
        # public"), or a read-only database ("cannot execute CREATE TABLE in a read-only
        # transaction"), as SQLite's read-only file is: the database's owner grants them, or the
        # URL names the primary. Any other of these errors is the ledger's own bug, shown whole.
        if not _refused_every_write(error):
            raise
        url = redacted_url(settings.database_url) if settings else "LEDGER_DATABASE_URL"
        problem = f"cannot use the database at {url}: {error}"
    except (sqlite3.DatabaseError, StoreDatabaseError) as error:
        # Only the base class: a file that is not a database, or a damaged one. Its subclasses
        # (a constraint, a statement) are the ledger's own bugs, shown whole.
        if type(error) not in (sqlite3.DatabaseError, StoreDatabaseError):
            raise
        url = redacted_url(settings.database_url) if settings else "LEDGER_DATABASE_URL"
        problem = f"{url} is not a usable database: {error}"
    print(f"{args.command_name}: {_one_line(problem)}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
