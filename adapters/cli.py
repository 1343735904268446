"""The adapters' subcommands of `ledger`: reconcile, adapters run|status|retry-parked, mappings.

`register(subcommands)` adds them to the `ledger` parser; each parser carries its handler as the
`handler` default, called as handler(args, settings) -> exit code. An expected failure is a
CommandError, told in one line by ledger/cli.py's main().
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.masking import mask, remember_settings, secret_safe_logger
from ledger.cli_errors import CommandError, database_url_checked, int_from
from ledger.config import Settings
from ledger.domain.ids import ID_PATTERN as RUN_ID_PATTERN
from ledger.existing_ledger import missing_sqlite_file, refuse_missing_sqlite, refuse_no_ledger

log = secret_safe_logger("adapters.cli")

# The push targets' names (each target class's `name`; tests/adapters check that they agree).
PUSH_TARGETS = ("bitrix", "moysklad", "wms", "wms-inbound")
PARKED_SHOWN_MAX = 10_000
SHOWN_MAX = 1_000_000  # a reconciliation's differences printed, each a line: more is no one's reading
NOTHING_CONFIGURED = (
    "no adapter is configured: set LEDGER_BITRIX_WEBHOOK_URL, LEDGER_MOYSKLAD_TOKEN or "
    "LEDGER_WMS_BASE_URL (see adapters/README.md)"
)


def register(subcommands: Any) -> None:
    reconcile = subcommands.add_parser(
        "reconcile",
        help="compare the ledger with an external snapshot; --apply RUN records a reviewed report",
        description="Without --apply: read the snapshot, compare, write and store the report (the ledger "
        "is not changed). With --apply RUN: record exactly the lines of the stored report RUN.",
    )
    reconcile.add_argument(
        "--source", choices=("moysklad", "wms", "csv"), help="where the external snapshot comes from"
    )
    reconcile.add_argument(
        "--file", type=Path, help="the snapshot for --source csv: store_id,sku,on_hand[,uom]"
    )
    reconcile.add_argument("--store", action="append", help="compare only this store (repeatable)")
    reconcile.add_argument(
        "--absent-as-zero",
        action="store_true",
        help="a SKU the snapshot does not list holds 0 in the stores compared (default: left untouched)",
    )
    # No defaults here: --apply refuses either given (the stored report has its own), and a
    # default could not be told from a value given.
    reconcile.add_argument(
        "--master", choices=("external", "ledger"), help="which side is right (default: external)"
    )
    reconcile.add_argument(
        "--out-dir", type=Path, help="where the CSV and JSON reports go (default: the current directory)"
    )
    reconcile.add_argument(
        "--run-id", type=_run_id, help="names the report, its files and its events (default: a new id)"
    )
    reconcile.add_argument(
        "--apply",
        metavar="RUN",
        nargs="?",
        const="",
        help="record the lines of the reviewed report RUN (printed first)",
    )
    reconcile.add_argument(
        "--force", action="store_true", help="with --apply: past LEDGER_ADAPTERS_RECONCILE_* limits too"
    )
    reconcile.add_argument(
        "--show", type=int_from(0, SHOWN_MAX), default=20, help="how many lines to print (default 20)"
    )
    reconcile.add_argument("--quiet", action="store_true", help="no progress bar")
    reconcile.set_defaults(handler=_reconcile)

    adapters = subcommands.add_parser(
        "adapters", help="run the outbound/inbound adapters, or see their status"
    )
    actions = adapters.add_subparsers(dest="adapters_command", required=True)
    run = actions.add_parser("run", help="push to Bitrix/MoySklad/WMS and receive webhooks until stopped")
    run.add_argument("--once", action="store_true", help="push until nothing is left, then exit")
    run.add_argument("--full", action="store_true", help="push every mapped SKU's level, not only changes")
    run.add_argument(
        "--only", action="append", choices=PUSH_TARGETS, help="run only this push target (repeatable)"
    )
    run.set_defaults(handler=_run)
    status = actions.add_parser("status", help="positions, lag, failures and parked items of each adapter")
    status.add_argument("--metrics", action="store_true", help="print the Prometheus text instead")
    status.add_argument(
        "--parked", type=int_from(0, PARKED_SHOWN_MAX), default=20, help="how many parked items to list"
    )
    status.set_defaults(handler=_status)
    register_hooks = actions.add_parser(
        "register-webhooks",
        help="subscribe the adapters' URL to MoySklad's demand and stock webhooks (idempotent)",
        description="Lists MoySklad's webhooks first and creates only the missing ones: demand CREATE, "
        "UPDATE, DELETE and the stock webhook (stock, bystore), all to "
        "<URL>/moysklad/webhook/<LEDGER_MOYSKLAD_WEBHOOK_SECRET>.",
    )
    register_hooks.add_argument(
        "--url",
        required=True,
        help="the public base URL MoySklad reaches `ledger adapters run`'s HTTP server by, "
        "e.g. https://ledger.example.com",
    )
    register_hooks.set_defaults(handler=_register_webhooks)
    retry = actions.add_parser("retry-parked", help="push parked items again at the next cycle")
    retry.add_argument("adapter", choices=PUSH_TARGETS, help="the push target whose parked items to retry")
    retry.add_argument("--key", help="only this item")
    retry.set_defaults(handler=_retry_parked)

    mappings = subcommands.add_parser("mappings", help="SKU, store, unit and status mappings")
    mapping_actions = mappings.add_subparsers(dest="mappings_command", required=True)
    load = mapping_actions.add_parser("load", help="upsert the rows of a CSV file (all or none)")
    load.add_argument("file", type=Path, help="system,kind,local_id,external_id[,external_type,factor]")
    load.set_defaults(handler=_mappings_load)
    listing = mapping_actions.add_parser("list", help="print every mapping as CSV")
    listing.add_argument("--system", help="only this system")
    listing.set_defaults(handler=_mappings_list)


def _run_id(text: str) -> str:
    """A run id names two files and the events' ids: a ledger id (1-64 of A-Za-z0-9-_.:), checked
    before anything is read or stored."""
    if not RUN_ID_PATTERN.fullmatch(text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"must be 1-64 of A-Za-z0-9-_.: (not only dots), not {text!r}")
    return text


def _database(settings: Settings, *, may_make: bool = False) -> Any:
    """The database, once this process knows the settings' secrets (to mask them wherever shown).
    A SQLite file that is not there is refused (a mistyped path would be a new, empty ledger that
    nothing reads), unless `may_make`: `adapters run`, which is a ledger's writer, makes it and
    says so."""
    from adapters.db import open_database

    remember_settings(settings)
    if not may_make:
        refuse_no_ledger(settings, made_by="`ledger migrate`")
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        print(f"ledger adapters: no ledger at {os.path.abspath(missing)}: making a new one", file=sys.stderr)
    with database_url_checked():
        return open_database(settings.database_url, settings.db_pool_size, settings.db_lock_timeout_s)


def _reader(settings: Settings) -> tuple[Any, bool]:
    """The database for a command that only reads (`adapters status`, `mappings list`): read-only
    (adapters/db.py open_reader), and whether the adapters' tables are there; a schema that lacks
    migrations is opened as `_database` opens it, migrations applied, as `ledger tokens list` does."""
    from adapters.db import open_reader

    remember_settings(settings)
    refuse_missing_sqlite(settings.database_url, made_by="`ledger migrate`")
    with database_url_checked():
        opened = open_reader(
            settings.database_url, settings.db_lock_timeout_s, settings.db_deadlock_timeout_ms
        )
    return opened if opened is not None else (_database(settings), True)


def _ledger_sink(settings: Settings) -> tuple[Any, Any]:
    """An in-process ledger in the database `_database` opened (so found, or made on purpose)."""
    from adapters.runner import ledger_sink

    refuse_missing_sqlite(settings.database_url)
    with database_url_checked():
        return ledger_sink(settings)


# -- reconcile -------------------------------------------------------------------------------------------


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    if args.apply is not None:
        return _reconcile_apply(args, settings)
    return _reconcile_report(args, settings)


def _reconcile_report(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from adapters.mappings import Mappings
    from adapters.reconcile import make_report, write_report
    from adapters.reconcile_runs import RunExists, save_report
    from adapters.snapshots import UnreadStores

    if args.force:
        raise CommandError("--force goes with --apply RUN")
    if args.source is None:
        raise CommandError("say where the snapshot comes from (--source csv|moysklad|wms), or --apply RUN")
    if args.source == "csv" and args.file is None:
        raise CommandError("--source csv needs --file")
    if args.source == "moysklad" and not settings.moysklad_token:
        raise CommandError("--source moysklad needs LEDGER_MOYSKLAD_TOKEN")
    if args.source == "wms" and not (settings.wms_base_url and settings.wms_api_key):
        raise CommandError("--source wms needs LEDGER_WMS_BASE_URL and LEDGER_WMS_API_KEY")
    recorder = _database(settings)
    mappings = Mappings(recorder, refresh_s=0)
    run_id = args.run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    # Read before the progress bar starts, so that a bad file is the only line on the terminal.
    snapshot = _csv_snapshot(args.file, mappings) if args.source == "csv" else None
    with tqdm(
        total=0,
        unit="store",
        desc=f"reading {args.source}",
        disable=args.quiet or bool(snapshot) or not sys.stderr.isatty(),  # no bar drawn into a log
    ) as bar:
        if snapshot is None:
            bar.total = len(mappings.all(args.source, "store"))
            read = _moysklad_snapshot if args.source == "moysklad" else _wms_snapshot
            snapshot = read(args, settings, mappings, bar.update)
    if not snapshot.stores_read:
        raise CommandError(
            "the file lists no store"
            if args.source == "csv"
            else f"no {args.source} store is mapped: `ledger mappings load` a {args.source},store row first"
        )
    stores = args.store or sorted(snapshot.stores)
    if args.absent_as_zero:
        try:
            snapshot = snapshot.absent_as_zero(stores)
        except UnreadStores as error:
            raise CommandError(f"--absent-as-zero: {error} (leave them out, or map them)") from None
    report = make_report(recorder, snapshot, run_id=run_id, stores=stores, master=args.master or "external")
    try:
        save_report(recorder, report)
    except RunExists as error:
        raise CommandError(f"{error}: choose another --run-id") from None
    csv_path, json_path = write_report(report, args.out_dir or Path("."))
    recorder.close()
    _print_report(report, args.show)
    print(f"report: {csv_path} and {json_path}")
    if report.discrepancies and report.master == "external":
        print(
            f"the ledger is unchanged; to record the line(s) above: ledger reconcile --apply {report.run_id}"
        )
    elif report.discrepancies:
        print("the ledger is the master: correct the external side from the report")
    return 0


def _print_report(report: Any, show: int) -> None:
    print(f"run {report.run_id}: {report.source} ({report.description}), stores {', '.join(report.stores)}")
    print(f"compared {report.compared} store/SKU pair(s): {len(report.discrepancies)} differ")
    if report.discrepancies:
        print(f"  {'store':<12} {'sku':<16} {'ledger':>8} {'external':>9} {'change':>8}")
        for d in report.discrepancies[:show]:
            print(
                f"  {d.store_id:<12} {d.sku:<16} {d.ledger_units:>8} {d.external_units:>9} "
                f"{d.difference_units:>+8}"
            )
        if len(report.discrepancies) > show:
            print(f"  ... and {len(report.discrepancies) - show} more (see the CSV report)")
    if report.untouched:
        named = ", ".join(f"{u.store_id}/{u.sku} ({u.ledger_units})" for u in report.untouched[:show])
        more = f" and {len(report.untouched) - show} more" if len(report.untouched) > show else ""
        print(f"not in the snapshot, left untouched: {named}{more}")
        print("  (--absent-as-zero would count them as 0)")


def _reconcile_apply(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.reconcile_runs import UnknownRun, load_report

    if not args.apply:
        raise CommandError(
            "--apply takes the run id of a reviewed report: run `ledger reconcile --source ...` first, "
            "read its report, then `ledger reconcile --apply RUN`"
        )
    if args.source or args.file or args.store or args.absent_as_zero or args.run_id:
        raise CommandError("--apply RUN records the stored report RUN: it reads no snapshot")
    if args.master is not None or args.out_dir is not None:
        raise CommandError(
            "--apply RUN records the stored report RUN as it was made (its --master, its files): "
            "it takes no --master or --out-dir"
        )
    recorder = _database(settings)
    try:
        try:
            report = load_report(recorder, args.apply)
        except UnknownRun as error:
            raise CommandError(str(error)) from None
        _print_report(report, args.show)
        return _record_report(recorder, report, settings, force=args.force)
    finally:
        recorder.close()


def _record_report(recorder: Any, report: Any, settings: Settings, *, force: bool) -> int:
    from adapters.reconcile_apply import (
        ApplyLimits,
        ApplyUnfinished,
        ReportSuperseded,
        apply_report,
        reasons_to_force,
    )
    from adapters.reconcile_runs import ApplyClaimTimeout, in_the_way
    from adapters.sink import EventsRefused, SinkError

    if report.master != "external":
        print("the ledger is the master of this report: nothing to record")
        return 0
    if report.applied_at:
        print(f"applied before, at {report.applied_at} ({report.applied_events} event(s)): nothing new")
        return 0
    if not report.discrepancies:
        print("no line differs: nothing to record")
        return 0
    found = in_the_way(recorder, report)
    if found.unfinished:
        raise CommandError(f"{ApplyUnfinished(report.run_id, found.unfinished)}. Nothing recorded")
    if found.applied_since:
        raise CommandError(
            f"report(s) {', '.join(found.applied_since)} over the same stores were applied after this one "
            "was made: its figures do not include their corrections; make a new report. Nothing recorded"
        )
    limits = ApplyLimits(
        settings.adapters_reconcile_line_units_max,
        settings.adapters_reconcile_changed_share_max,
        settings.adapters_reconcile_share_min_skus,
    )
    reasons = reasons_to_force(report, limits)
    if reasons and not force:
        raise CommandError(
            "; ".join(reasons) + ". Nothing recorded: check the report, then apply it with --force"
        )
    print(f"recording the {len(report.discrepancies)} line(s) above (the change, as stock.adjustment) ...")
    sink, ledger = _ledger_sink(settings)
    try:
        events = apply_report(recorder, report, sink, limits, force=force)
    except (ReportSuperseded, ApplyUnfinished, ApplyClaimTimeout) as error:  # another began meanwhile
        raise CommandError(f"{error}. Nothing recorded") from None
    except EventsRefused as error:
        raise CommandError(
            f"{error}, and will be again: the report is not marked applied, and the lines before it "
            "may be recorded already (`ledger history` shows them by their reconcile:<run> ids); "
            "reports over its stores are refused until it is applied"
        ) from None
    except SinkError as error:
        raise CommandError(
            f"{error}. The report is not marked applied; applying it again records only what is "
            "missing (each line's event id is the run's), and reports over its stores are refused "
            "until it is"
        ) from None
    finally:
        ledger.stop()
    print(f"recorded {events} stock.adjustment event(s) for run {report.run_id}; again would record nothing")
    return 0


def _csv_snapshot(path: Path, mappings: Any) -> Any:
    from adapters.snapshots import read_csv_snapshot

    try:
        return read_csv_snapshot(path, mappings)
    except (ValueError, csv.Error, OSError) as error:  # read_csv_snapshot names the file and the line
        raise CommandError(str(error)) from None


def _moysklad_snapshot(
    args: argparse.Namespace, settings: Settings, mappings: Any, progress: Callable[[int], object]
) -> Any:
    from adapters.moysklad import MoySkladClient
    from adapters.outbound import TargetUnavailable
    from adapters.runner import moysklad_config
    from adapters.snapshots import read_moysklad_snapshot

    config = moysklad_config(settings)
    assert config is not None, "_reconcile_report checks LEDGER_MOYSKLAD_TOKEN before it opens the database"
    client = MoySkladClient(config)
    try:
        snapshot = read_moysklad_snapshot(client, mappings, progress)
    except (TargetUnavailable, ValueError) as error:  # ValueError: an answer it cannot read, a fraction
        raise CommandError(mask(f"reading MoySklad's stock report failed: {error}")) from None
    finally:
        client.http.close()
    if not args.store:
        args.store = sorted(mappings.all("moysklad", "store"))
    return snapshot


def _wms_snapshot(
    args: argparse.Namespace, settings: Settings, mappings: Any, progress: Callable[[int], object]
) -> Any:
    from adapters.outbound import TargetUnavailable
    from adapters.runner import wms_config
    from adapters.wms import WmsClient
    from adapters.wms_stock import StockReadRefused, read_wms_snapshot

    config = wms_config(settings)
    assert config is not None, "_reconcile_report checks the WMS settings before it opens the database"
    client = WmsClient(config)
    try:
        snapshot = read_wms_snapshot(client, mappings, progress)
    except (TargetUnavailable, StockReadRefused, ValueError) as error:  # ValueError: not JSON, say
        raise CommandError(mask(f"reading the WMS's stock failed: {error}")) from None
    finally:
        client.http.close()
    if not args.store:
        args.store = sorted(mappings.all("wms", "store"))
    return snapshot


# -- adapters ----------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.runner import (
        Runner,
        bitrix_config,
        build_adapters,
        moysklad_config,
        refuse_unusable_webhook_secrets,
        wms_config,
    )

    refuse_unusable_webhook_secrets(settings)  # before a new ledger is made for a start refused
    if not any(config(settings) for config in (bitrix_config, moysklad_config, wms_config)):
        raise CommandError(NOTHING_CONFIGURED)  # likewise: a new ledger for no adapter is litter
    recorder = _database(settings, may_make=True)
    needs_sink = bool(settings.moysklad_token or (settings.wms_base_url and settings.wms_api_key))
    sink, ledger = _ledger_sink(settings) if needs_sink else (None, None)
    adapters = None
    try:
        adapters = build_adapters(settings, sink, recorder)
        if args.only:
            adapters.workers = {name: w for name, w in adapters.workers.items() if name in args.only}
        if not adapters.workers and adapters.inbox is None:
            raise CommandError(NOTHING_CONFIGURED)  # none left by --only
        if args.once:
            return _run_once(adapters, full=args.full)
        if args.full:
            for worker in adapters.workers.values():
                worker.run_once(full=True)
        runner = Runner(adapters, settings).start()
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        log.info("adapters running: %s", ", ".join(adapters.workers) or "inbound only")
        stopped.wait()
        runner.stop()
        return 0
    finally:
        if adapters is not None:
            adapters.close_connections()  # again after runner.stop(): closing twice is harmless
        if ledger is not None:
            ledger.stop()


def _run_once(adapters: Any, *, full: bool) -> int:
    from adapters.runner import check_portals

    check_portals(adapters)
    failed = False
    for name, worker in adapters.workers.items():
        reports = [worker.run_once(full=True)] if full else []
        reports += worker.run_until_idle()
        pushed = sum(r.pushed for r in reports)
        parked = sum(r.parked for r in reports)
        aborted = next((r.aborted for r in reports if r.aborted), None)
        print(
            f"{name}: pushed {pushed}, parked {parked}, position {reports[-1].end}"
            + (f", stopped: {mask(aborted)}" if aborted else "")
        )
        failed = failed or aborted is not None
        worker.release_lease()
    if adapters.wms_status is not None:
        print(f"wms: {adapters.wms_status.poll()} picking order status(es) changed")
    if adapters.wms_arrivals is not None:
        print(f"wms: {adapters.wms_arrivals.poll()} expected receipt(s) received or cancelled")
    if adapters.inbox is not None:
        done, later = adapters.inbox.run_once()
        print(f"inbox: processed {done}, left for later {later}")
    return 1 if failed else 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.status import metrics_text_of, read_status, status_table

    recorder, has_tables = _reader(settings)
    try:
        statuses = read_status(recorder) if has_tables else []
        if args.metrics:
            sys.stdout.write(metrics_text_of(statuses).decode())
            return 0
        print(status_table(statuses))
        parked, alerts = _parked_and_alerts(recorder, args.parked) if has_tables else ([], [])
    finally:
        recorder.close()
    if parked:
        print("\nparked items (newest first):")
        for row in parked:
            print(
                f"  {row['adapter']} {row['item_key']} after {row['attempts']} attempt(s) at "
                f"{row['parked_at']}: " + mask(row["reason"])
            )
    if alerts:
        print("\nalerts (newest first):")
        for row in alerts:
            print(mask(f"  {row['at']} {row['adapter']} {row['subject']}: {row['detail']}"))
    return 0


def _parked_and_alerts(recorder: Any, parked_max: int) -> tuple[list[Any], list[Any]]:
    with recorder.read_transaction() as tx:
        parked = tx.fetchall(
            "SELECT adapter, item_key, attempts, reason, parked_at FROM adapter_parked ORDER BY "
            "parked_at DESC "
            "LIMIT %s",
            (parked_max,),
        )
        alerts = tx.fetchall(
            "SELECT at, adapter, subject, detail FROM adapter_journal WHERE kind = 'alert' ORDER "
            "BY at DESC LIMIT 10"
        )
    return parked, alerts


def _register_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.moysklad import MoySkladClient
    from adapters.moysklad_webhooks import RegistrationError, register_webhooks, webhook_url
    from adapters.outbound import TargetUnavailable
    from adapters.runner import moysklad_config, refuse_unusable_webhook_secrets

    remember_settings(settings)
    config = moysklad_config(settings)
    if config is None:
        raise CommandError("register-webhooks needs LEDGER_MOYSKLAD_TOKEN")
    if not settings.moysklad_webhook_secret:
        raise CommandError("register-webhooks needs LEDGER_MOYSKLAD_WEBHOOK_SECRET (the URL's last part)")
    refuse_unusable_webhook_secrets(settings)  # before MoySklad is told a URL no delivery can reach
    client = MoySkladClient(config)
    try:
        url = webhook_url(args.url, settings.moysklad_webhook_secret)
        print(f"MoySklad webhooks to {mask(url)}:")
        for line in register_webhooks(client, url):
            print(f"  {line}")
    except (RegistrationError, TargetUnavailable, ValueError) as error:
        raise CommandError(mask(str(error))) from None
    finally:
        client.http.close()
    return 0


def _retry_parked(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.outbound import request_parked_retry

    count = request_parked_retry(_database(settings), args.adapter, args.key)
    if args.key is not None and count == 0:
        raise CommandError(
            f"{args.adapter} has no parked item {args.key!r} (ledger adapters status lists them)"
        )
    print(f"{count} parked item(s) of {args.adapter} will be pushed again at the next cycle")
    return 0


# -- mappings ----------------------------------------------------------------------------------------


def _mappings_load(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.mappings import parse_csv, save

    # The whole file is checked before the database is opened: all rows or none.
    try:
        rows = parse_csv(args.file)
    except (ValueError, csv.Error) as error:  # MappingError names the file and the line
        raise CommandError(str(error)) from None
    count = save(_database(settings), rows)
    print(
        f"loaded {count} mapping row(s) from {args.file}; running adapters pick them up within "
        f"{settings.adapters_mappings_refresh_s:g} s"
    )
    return 0


def _mappings_list(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.mappings import Snapshot, read_snapshot

    recorder, has_tables = _reader(settings)
    try:
        snapshot = read_snapshot(recorder) if has_tables else Snapshot()
    finally:
        recorder.close()
    writer = csv.writer(sys.stdout)
    writer.writerow(["system", "kind", "local_id", "external_id", "external_type", "factor"])
    for (system, kind), refs in sorted(snapshot.refs.items()):
        if args.system in (None, system):
            for local_id, ref in sorted(refs.items()):
                writer.writerow([system, kind, local_id, ref.external_id, ref.external_type or "", ""])
    for system, units in sorted(snapshot.units.items()):
        if args.system in (None, system):
            for sku, (uom, factor) in sorted(units.items()):
                writer.writerow([system, "unit", sku, uom, "", factor])
    for system, rules in sorted(snapshot.statuses.items()):
        if args.system in (None, system):
            for status, rule in sorted(rules.items()):
                writer.writerow([system, "status", status, rule.target_status, rule.action or "", ""])
    return 0
