"""The figure of issue #15 item 5: a migration of a 1,000,000-event PostgreSQL database made by the
previous release, its time, and whether writes continued meanwhile.

1. The previous release (the commit before schema versions, taken with `git archive`) records the
   events through its own writer (the mix of bench/reads_bench.py), into a fresh embedded PostgreSQL.
2. An instance of the previous release serves that database; a client posts one receipt at a time
   to it, without pause, for the whole measurement.
3. This release's `ledger migrate` runs while those writes go on: its wall time, and the writes
   acknowledged during it and the longest wait between two acknowledgements, are the figure.
4. This release's `ledger serve` starts on the migrated database and takes writes too, while the
   previous release's instance still does: both must succeed.

Not a test: it asserts nothing about speed. `python bench/migrate_bench.py --events 20000` for a
quick look; the default is the issue's 1,000,000 events. Results go to bench/migrate_results.json.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing import BenchError, Postgres, Server, free_port, http_json, wait_ready

PREVIOUS_RELEASE = "807bccaacee79fe5b789eed180452bd2a6598457"
REPO = Path(__file__).resolve().parents[1]
READY_DEADLINE_S = 120.0
WRITES_BEFORE_S = 10.0  # writes under way before the migration starts
WRITES_AFTER_S = 3.0  # and after this release has started beside the previous one
REQUEST_TIMEOUT_S = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events the previous release records")
    parser.add_argument("--rounds", type=int, default=1, help="migrations measured, each on a fresh database")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "migrate_results.json")
    parser.add_argument("--load", nargs=2, metavar=("URL", "EVENTS"), help=argparse.SUPPRESS)  # internal
    return parser.parse_args(argv)


def _load_with_the_running_code(database_url: str, count: int) -> None:
    """Step 1, run in a child whose `ledger` is the previous release's (see _previous_env)."""
    from reads_bench import load

    import ledger

    print(f"    recording with {ledger.__file__}", flush=True)
    seconds = load(database_url, count, seed=15)
    print(f"    {count:,} events recorded in {seconds:.0f} s", flush=True)


def _previous_release(directory: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE, "ledger", "adapters"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if archive.returncode != 0:
        raise BenchError(f"cannot take the previous release from git: {archive.stderr.decode().strip()}")
    target = directory / "previous-release"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def _env(database_url: str, code: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(
        [str(code or REPO), str(REPO / "bench")]
        + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])
    )
    return env


def _serve(name: str, database_url: str, code: Path | None, workdir: Path) -> tuple[Server, int]:
    port = free_port()
    server = Server(
        name,
        [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port), "--log-level", "warning"],
        _env(database_url, code),
        workdir / f"{name}.log",
    )
    # `python -m` puts the working directory first on the path: the release's own checkout.
    server.argv = ["env", "-C", str(code or REPO), *server.argv]
    server.start()
    wait_ready(server, port, "/readyz", READY_DEADLINE_S)
    return server, port


@dataclass(frozen=True)
class Migrated:
    """When `ledger migrate` ran (time.monotonic(): the writes acknowledged in between are the figure's)
    and what it printed."""

    started: float
    ended: float
    output: list[str]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def _migrate(database_url: str) -> Migrated:
    """This release's `ledger migrate` on the database, as an operator runs it; a BenchError if it fails."""
    started = time.monotonic()
    migrated = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "migrate"],
        env=_env(database_url, None),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    ended = time.monotonic()
    if migrated.returncode != 0:
        raise BenchError(f"ledger migrate failed: {migrated.stderr}")
    return Migrated(started, ended, migrated.stdout.splitlines())


class Writes:
    """One receipt at a time to one instance, without pause; each acknowledgement's time."""

    def __init__(self, port: int, name: str) -> None:
        self.port, self.name = port, name
        self.acknowledged: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ids = itertools.count(1)

    def __enter__(self) -> Writes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            number = next(self._ids)
            envelope = {
                "specversion": "1.0",
                "id": f"{self.name}-{number}",
                "source": "bench/migrate",
                "type": "stock.receipt",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "subject": f"{self.name}-store",
                "datacontenttype": "application/json",
                "data": {"lines": [{"sku": f"SKU-{number % 100}", "qty": 1}]},
            }
            try:
                status, body = http_json(
                    self.port, "POST", "/v1/events", envelope, timeout_s=REQUEST_TIMEOUT_S
                )
            except OSError as error:
                self.failures.append(str(error))
                continue
            if status == 200 and body["results"][0]["outcome"] == "accepted":
                self.acknowledged.append(time.monotonic())
            else:
                self.failures.append(f"{status} {str(body)[:200]}")

    def during(self, start: float, end: float) -> dict[str, Any]:
        inside = [t for t in self.acknowledged if start <= t <= end]
        around = (
            [t for t in self.acknowledged if t < start][-1:]
            + inside
            + [t for t in self.acknowledged if t > end][:1]
        )
        gaps = [b - a for a, b in itertools.pairwise(around)]
        return {
            "acknowledged": len(inside),
            "longest_wait_between_acknowledgements_ms": round(max(gaps, default=float("nan")) * 1000, 1),
        }


def one_round(
    number: int, args: argparse.Namespace, pg: Postgres, previous: Path, workdir: Path
) -> dict[str, Any]:
    database = pg.create_database(f"migrate_{number}")
    url = pg.url(database)
    print(f"  round {number}: the previous release records {args.events:,} events", flush=True)
    loaded = subprocess.run(
        [sys.executable, __file__, "--load", url, str(args.events)],
        env=_env(url, previous),
        cwd=previous,
        check=False,
    )
    if loaded.returncode != 0:
        raise BenchError("the previous release could not record the events")
    history_rows = pg.execute("SELECT COUNT(*) FROM ledger_history", database)[0][0]
    versions = pg.execute("SELECT to_regclass('ledger_schema_versions') IS NOT NULL", database)[0][0]
    if versions:
        raise BenchError("the database has schema versions: it was not made by the previous release")
    pg.checkpoint()
    old, old_port = _serve(f"previous-{number}", url, previous, workdir)
    new: Server | None = None
    try:
        with Writes(old_port, f"previous-{number}") as old_writes:
            time.sleep(WRITES_BEFORE_S)
            load = os.getloadavg()
            migrated = _migrate(url)
            applied = pg.execute(
                "SELECT version, seconds FROM ledger_schema_versions ORDER BY version", database
            )
            new, new_port = _serve(f"current-{number}", url, None, workdir)
            with Writes(new_port, f"current-{number}") as new_writes:
                time.sleep(WRITES_AFTER_S)
                both_from = new_writes.acknowledged[0] if new_writes.acknowledged else time.monotonic()
        figure = {
            "round": number,
            "events": args.events,
            "history_rows": history_rows,
            "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "ledger_migrate_s": round(migrated.seconds, 3),
            "migrations_s": {int(v): round(float(s), 4) for v, s in applied},
            "previous_release_writes_during_migration": old_writes.during(migrated.started, migrated.ended),
            # The same length of time just before the migration, for comparison.
            "previous_release_writes_just_before": old_writes.during(
                2 * migrated.started - migrated.ended, migrated.started
            ),
            "previous_release_writes_while_both_ran": len(
                [t for t in old_writes.acknowledged if t >= both_from]
            ),
            "this_release_writes_while_both_ran": len(new_writes.acknowledged),
            "failed_writes": old_writes.failures + new_writes.failures,
            "migrate_output": migrated.output,
        }
    finally:
        old.stop()
        if new is not None:
            new.stop()
    figure["from_before_business_time"] = _from_before_business_time(pg, database, url)
    print(json.dumps(figure, indent=2), flush=True)
    return figure


# What a database made before business time (CONTRACT §7) lacked; without the table of versions,
# as every database made before this release.
BEFORE_BUSINESS_TIME = (
    "DROP TABLE ledger_schema_versions",
    "DROP INDEX ledger_history_by_sku_occurred",
    "ALTER TABLE ledger_history DROP COLUMN occurred_at",
)


def _from_before_business_time(pg: Postgres, database: str, url: str) -> dict[str, Any]:
    """The heaviest migration of the list on the same rows, no instance running: migration 3
    fills occurred_at on every history row and builds its index, holding the log's write lock
    (writes would wait for all of it)."""
    for statement in BEFORE_BUSINESS_TIME:
        pg.execute(statement, database)
    pg.execute("VACUUM ledger_history", database)
    pg.checkpoint()
    load = os.getloadavg()
    migrated = _migrate(url)
    applied = pg.execute("SELECT version, seconds FROM ledger_schema_versions ORDER BY version", database)
    return {
        "load_average_before": [round(x, 2) for x in load],
        "ledger_migrate_s": round(migrated.seconds, 3),
        "migrations_s": {int(v): round(float(s), 4) for v, s in applied},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load:
        _load_with_the_running_code(args.load[0], int(args.load[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="ledger-migrate-bench-") as temp:
        workdir = Path(temp)
        previous = _previous_release(workdir)
        pg = Postgres(workdir / "pg")
        pg.start()
        try:
            print(
                f"PostgreSQL in {workdir}; {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True
            )
            rounds = [one_round(number, args, pg, previous, workdir) for number in range(1, args.rounds + 1)]
            results = {"previous_release": PREVIOUS_RELEASE, "postgres": pg.show(), "rounds": rounds}
        finally:
            pg.stop()
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
