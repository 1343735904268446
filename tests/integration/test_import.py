"""`ledger import FILE` (CONTRACT §7) as a user runs it, on SQLite and PostgreSQL: idempotent,
invalid lines reported by number while every valid line is recorded, one line and exit 2 for what
stops it, no event lost or doubled while a `ledger serve` records on the same database, and none
when it is killed -9 half-way and run again."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import pytest
from support import api, db
from support import events as ev
from support.ids import unique
from support.postgres import EmbeddedPostgres
from support.server import ledger_env, run_ledger_command

LEDGER = Path(sys.executable).parent / "ledger"
EXIT_INVALID = 1
EXIT_USAGE = 2
DEADLINE_S = 180.0


def run_import(
    database_url: str, path: Path | str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert LEDGER.exists(), f"{LEDGER} is missing: pip install -e ."
    return subprocess.run(
        [str(LEDGER), "import", str(path), *args],
        env=ledger_env(database_url, env),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in done.stderr, done.stderr
    [line] = done.stdout.splitlines()
    summary: dict[str, Any] = orjson.loads(line)
    return summary


def write_lines(path: Path, lines: list[Any]) -> Path:
    """Each item a line: an envelope (dict) as JSON, a str as it is."""
    with path.open("wb") as file:
        for line in lines:
            file.write((line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n")
    return path


def history_of(database_url: str, source: str) -> list[dict[str, Any]]:
    return db.query(
        database_url,
        "SELECT event_id, type, outcome, principal, store_id, sku FROM ledger_history "
        "WHERE source = %s ORDER BY position, line_no",
        (source,),
    )


def event_keys(database_url: str, source: str) -> int:
    return int(
        db.scalar(database_url, "SELECT COUNT(*) AS n FROM ledger_event_keys WHERE source = %s", (source,))
    )


def a_history(store: str, source: str, events_max: int = 40) -> list[dict[str, Any]]:
    """A store's history as an export holds it: receipts, sales (one refused), a reservation and
    its shipment, a transfer, a count."""
    other = f"{store}-b"

    def at(event: dict[str, Any], n: int) -> dict[str, Any]:
        return {
            **event,
            "id": f"{source}-{n:05d}",
            "source": source,
            "time": f"2025-01-{1 + n % 28:02d}T10:00:00+03:00",
        }

    history = [
        ev.receipt(store, ("A", 50), ("B", 20)),
        ev.sale(store, ("A", 5), order_id="o-1"),
        ev.sale(store, ("B", 999), order_id="o-2"),  # refused: insufficient_stock
        ev.reservation(store, "r-1", ("A", 3)),
        ev.shipment(store, ("A", 3), reservation_id="r-1"),
        ev.transfer(store, other, "t-1", ("B", 4)),
        ev.count(store, ("A", 40)),
        ev.pos_sale(store, ("A", 1), reference="till 1"),
    ]
    history += [ev.pos_sale(store, ("B", 1)) for _ in range(events_max - len(history))]
    return [at(event, n) for n, event in enumerate(history, 1)]


# -- idempotent, and the same rules as any event -------------------------------------------------------


def test_an_import_run_twice_records_nothing_new_the_second_time(database_url: str, tmp_path: Path) -> None:
    store, source = f"s-{uuid.uuid4().hex[:8]}", "1c/test-twice"
    path = write_lines(tmp_path / "history.jsonl", a_history(store, source))

    first = run_import(database_url, path, "--json")
    assert first.returncode == 0, first.stderr  # a rejected sale is recorded: it counts as recorded
    summary = summary_of(first)
    assert (summary["lines"], summary["accepted"], summary["rejected"]) == (40, 39, 1)
    assert (summary["duplicate"], summary["invalid"], summary["complete"]) == (0, 0, True)
    rows = history_of(database_url, source)
    assert {row["principal"] for row in rows} == {"import"}
    assert [row["outcome"] for row in rows if row["event_id"] == f"{source}-00003"] == ["rejected"]
    assert event_keys(database_url, source) == 40
    levels = db.level_rows(database_url, store)
    assert (levels["A"]["on_hand"], levels["B"]["on_hand"]) == (40 - 1, 20 - 4 - 32)

    second = run_import(database_url, path, "--json")
    assert second.returncode == 0, second.stderr
    again = summary_of(second)
    assert (again["duplicate"], again["accepted"], again["rejected"]) == (40, 0, 0)
    assert history_of(database_url, source) == rows
    assert db.level_rows(database_url, store) == levels


def test_the_summary_counts_each_outcome_on_stdout(database_url: str, tmp_path: Path) -> None:
    store, source = f"s-{uuid.uuid4().hex[:8]}", "1c/test-summary"
    path = write_lines(tmp_path / "h.jsonl", a_history(store, source, events_max=10))
    done = run_import(database_url, path, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "accepted" in done.stdout
    counts = {
        words[0]: int(words[1].replace(",", ""))
        for words in (line.split() for line in done.stdout.splitlines()[1:])
    }
    assert counts == {"accepted": 9, "duplicate": 0, "rejected": 1, "invalid": 0}
    assert done.stdout.splitlines()[0].startswith(f"imported {path}: 10 lines")
    assert "line 3: rejected (insufficient_stock)" in done.stderr


# -- invalid lines -----------------------------------------------------------------------------------


def test_invalid_lines_are_reported_by_number_and_every_valid_line_is_recorded(
    database_url: str, tmp_path: Path
) -> None:
    store, source = f"s-{uuid.uuid4().hex[:8]}", "1c/test-invalid"
    good = a_history(store, source, events_max=10)
    no_store = {**good[1], "subject": "no/slash"}
    lines: list[Any] = [good[0], "{not json", good[1], no_store, "", good[2], "[1, 2]", *good[3:]]
    path = write_lines(tmp_path / "mixed.jsonl", lines)

    done = run_import(database_url, path, "--json")
    assert done.returncode == EXIT_INVALID, done.stderr
    summary = summary_of(done)
    assert (summary["invalid"], summary["accepted"] + summary["rejected"], summary["complete"]) == (
        3,
        10,
        False,
    )
    reported = [line for line in done.stderr.splitlines() if line.startswith("line ") and "invalid" in line]
    assert reported[0].startswith("line 2: invalid, not recorded: not JSON")
    assert reported[1].startswith("line 4: invalid, not recorded: subject:")
    assert reported[2].startswith("line 7: invalid, not recorded: an event must be a JSON object")
    assert len(reported) == 3
    assert event_keys(database_url, source) == 10


def test_check_says_what_would_be_recorded_and_records_nothing(database_url: str, tmp_path: Path) -> None:
    store, source = f"s-{uuid.uuid4().hex[:8]}", "1c/test-check"
    good = a_history(store, source, events_max=10)
    path = write_lines(tmp_path / "check.jsonl", [*good, "{not json"])
    first = write_lines(tmp_path / "first.jsonl", good[:1])
    assert run_import(database_url, first, "--json").returncode == 0  # the tables exist, one event in

    done = run_import(database_url, path, "--check")
    assert done.returncode == EXIT_INVALID, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith(f"checked {path}: 10 events to send at 1 stores, 1 invalid lines")
    assert "stock.pos_sale" in done.stdout and "nothing was recorded" in done.stdout
    assert "line 11: invalid: not JSON" in done.stderr
    assert event_keys(database_url, source) == 1  # nothing more recorded
    assert run_import(database_url, path, "--json").returncode == EXIT_INVALID
    assert event_keys(database_url, source) == 10  # the same file, recorded without --check


def test_a_line_over_the_limit_is_invalid_and_the_next_line_is_read(
    database_url: str, tmp_path: Path
) -> None:
    store, source = f"s-{uuid.uuid4().hex[:8]}", "1c/test-long"
    good = a_history(store, source, events_max=10)
    huge = {**good[1], "data": {**good[1]["data"], "reference": "x" * 5000}}
    path = write_lines(tmp_path / "long.jsonl", [good[0], huge, *good[2:]])
    done = run_import(database_url, path, "--json", env={"LEDGER_IMPORT_LINE_BYTES_MAX": "2048"})
    assert done.returncode == EXIT_INVALID, done.stderr
    assert "line 2: invalid, not recorded: longer than 2048 bytes" in done.stderr
    assert summary_of(done)["invalid"] == 1
    assert event_keys(database_url, source) == 9


# -- what stops it: one line, exit 2 -----------------------------------------------------------------


def _refused_in_one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == EXIT_USAGE, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("ledger import: "), line
    for word in words:
        assert word in line, line


def test_a_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run_import(f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "nothing-here.jsonl")
    _refused_in_one_line(done, "nothing-here.jsonl", "No such file")
    done = run_import(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    _refused_in_one_line(done, "Is a directory")


def test_a_database_that_cannot_be_used_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "h.jsonl", a_history("s-1", "1c/x", events_max=9))
    _refused_in_one_line(
        run_import(f"sqlite:///{tmp_path / 'no-dir' / 'l.db'}", path), "cannot use the database"
    )
    with tempfile.TemporaryDirectory() as nowhere:
        unreachable = f"postgresql://postgres@/ledger?host={nowhere}"
        _refused_in_one_line(run_import(unreachable, path), "cannot use the database")
    _refused_in_one_line(run_import("mysql://x/y", path), "mysql")


def test_a_role_that_may_not_write_stops_the_import_in_one_line(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """A role granted SELECT only (a reporting role, given by mistake): every batch is refused the
    same way, whatever its events, as a read-only database refuses them. It was taken for events
    the writer cannot store: each line was tried alone, with the writer's retries, and reported
    "not recorded", one line after another, exit 1 at the end of the file (found by review)."""
    admin_url = postgres.create_database()
    made = run_ledger_command(admin_url, "migrate")  # the schema, made by the database's owner
    assert made.returncode == 0, made.stderr
    role = unique("reader").replace("-", "_")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")  # type: ignore[arg-type]
    parts = urlsplit(admin_url)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@', 1)[1]}"))
    path = write_lines(tmp_path / "h.jsonl", a_history("s-1", "1c/x", events_max=9))
    done = run_import(url, path, "--json", "--quiet", env={"LEDGER_IMPORT_RETRIES_MAX": "0"})
    assert done.returncode == EXIT_USAGE, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("ledger import: stopped at line 1: the writer could not record it"), last
    assert "permission denied" in last, last
    summary = summary_of(done)
    assert (summary["accepted"], summary["failed"]) == (0, 0), summary


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    done = subprocess.run(
        [str(LEDGER), "import"], env=ledger_env(url), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == EXIT_USAGE and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    path = write_lines(tmp_path / "h.jsonl", a_history("s-1", "1c/x", events_max=9))
    _refused_in_one_line(
        run_import(url, path, env={"LEDGER_IMPORT_BATCH_EVENTS_MAX": "0"}), "LEDGER_IMPORT_BATCH_EVENTS_MAX"
    )


def test_standard_input_can_be_imported(database_url: str, tmp_path: Path) -> None:
    source = "1c/test-stdin"
    path = write_lines(tmp_path / "h.jsonl", a_history(f"s-{uuid.uuid4().hex[:8]}", source, events_max=9))
    with path.open("rb") as stdin:
        done = subprocess.run(
            [str(LEDGER), "import", "-", "--json"],
            env=ledger_env(database_url),
            stdin=stdin,
            capture_output=True,
            timeout=DEADLINE_S,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert event_keys(database_url, source) == 9


# -- beside a running service ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("through", ["the service's writer", "its own writer"])
def test_no_event_is_lost_or_doubled_while_the_service_records_the_same_events(
    database_url: str, tmp_path: Path, serve: Any, through: str
) -> None:
    """The same events reach the ledger twice at once, from the file and over HTTP (a producer
    re-sending what the export holds): each is recorded exactly once, whoever records it."""
    store, source = f"s-{uuid.uuid4().hex[:8]}", "1c/test-race"
    events = [
        {**ev.receipt(store, (f"SKU-{n % 50}", 1 + n % 7)), "id": f"e-{n:05d}", "source": source}
        for n in range(2950)  # the last batch of 100 is not full
    ]
    path = write_lines(tmp_path / "race.jsonl", events)
    socket_path = str(tmp_path / "writer.sock")  # removed with the test's directory
    server = serve(database_url, {"LEDGER_WRITER_SOCKET": socket_path})
    env = {"LEDGER_WRITER_SOCKET": socket_path, "LEDGER_IMPORT_BATCH_EVENTS_MAX": "100"}
    if through == "its own writer":
        env["LEDGER_WRITER_SOCKET"] = str(tmp_path / "no-writer-here.sock")

    http_results: list[dict[str, Any]] = []

    def post_the_same_events_backwards() -> None:
        with server.client() as client:
            for start in reversed(range(0, len(events), 200)):
                http_results.extend(api.post_events(client, *events[start : start + 200]))

    sender = threading.Thread(target=post_the_same_events_backwards)
    sender.start()
    done = run_import(database_url, path, "--json", env=env)
    sender.join(DEADLINE_S)
    assert not sender.is_alive()
    assert done.returncode == 0, done.stderr
    expected_writer = (
        "through the running writer"
        if through == "the service's writer"
        else f"of its own (no writer answered at LEDGER_WRITER_SOCKET={tmp_path / 'no-writer-here.sock'})"
    )
    assert expected_writer in done.stderr

    summary = summary_of(done)
    from_http = sum(1 for result in http_results if result["outcome"] == "accepted")
    assert summary["accepted"] + from_http == len(events)
    assert summary["accepted"] + summary["duplicate"] == len(events)
    assert event_keys(database_url, source) == len(events)
    rows = history_of(database_url, source)
    assert sorted(row["event_id"] for row in rows) == sorted(event["id"] for event in events)
    expected: dict[str, int] = {}
    for event in events:
        for line in event["data"]["lines"]:
            expected[line["sku"]] = expected.get(line["sku"], 0) + line["qty"]
    levels = db.level_rows(database_url, store)
    assert {sku: levels[sku]["on_hand"] for sku in expected} == expected
    assert {row["principal"] for row in rows} <= {"import", None}


def test_a_writer_that_records_into_another_database_is_refused_before_anything_is_sent(
    tmp_path: Path, serve: Any
) -> None:
    """The service's writer listens at the socket the import is given, but records into another
    ledger than the import's LEDGER_DATABASE_URL: the import refuses it in one line, exit 2,
    records nothing there (the log is for good) and makes no ledger of its own."""
    served, other = tmp_path / "a.db", tmp_path / "b.db"
    socket_path = str(tmp_path / "writer.sock")
    serve(f"sqlite:///{served}", {"LEDGER_WRITER_SOCKET": socket_path})
    path = write_lines(tmp_path / "h.jsonl", a_history("s-1", "1c/elsewhere", events_max=9))
    env = {"LEDGER_WRITER_SOCKET": socket_path}
    for args in (("--quiet",), ()):
        done = run_import(f"sqlite:///{other}", path, *args, env=env)
        _refused_in_one_line(done, socket_path, str(served), str(other))
        assert not other.exists()
        assert event_keys(f"sqlite:///{served}", "1c/elsewhere") == 0
    # The same ledger named by another path is the same ledger: recorded through that writer.
    done = run_import(f"sqlite:///{tmp_path / '.' / 'a.db'}", path, "--json", "--quiet", env=env)
    summary = summary_of(done)
    assert (summary["accepted"], summary["rejected"]) == (8, 1), done.stderr
    assert event_keys(f"sqlite:///{served}", "1c/elsewhere") == 9


# -- the README's example ------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "import"


def test_the_example_export_converts_to_the_committed_file_and_imports(
    database_url: str, tmp_path: Path
) -> None:
    converted = subprocess.run(
        [sys.executable, str(EXAMPLE / "csv_to_events.py"), str(EXAMPLE / "1c-movements.csv")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout == (EXAMPLE / "1c-movements.jsonl").read_text(encoding="utf-8")

    done = run_import(database_url, EXAMPLE / "1c-movements.jsonl", "--json")
    assert done.returncode == 0, done.stderr
    summary = summary_of(done)
    assert (summary["accepted"], summary["rejected"], summary["invalid"]) == (10, 1, 0)
    assert db.level_rows(database_url, "store-12")["SKU-1"]["on_hand"] == 52  # as the README says
    assert db.level_rows(database_url, "store-7")["SKU-1"]["on_hand"] == 15
    again = summary_of(run_import(database_url, EXAMPLE / "1c-movements.jsonl", "--json"))
    assert again["duplicate"] == 11


def test_a_writer_that_stays_unavailable_stops_the_import_with_exit_2(tmp_path: Path) -> None:
    """A writer process that takes the connection and never answers (it drops it): the batch is
    sent again LEDGER_IMPORT_RETRIES_MAX times, then the import stops, says where, and exits 2."""
    socket_path = os.path.join(tempfile.gettempdir(), f"ledger-import-test-{uuid.uuid4().hex[:10]}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def drop_every_connection() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    dropper = threading.Thread(target=drop_every_connection)
    dropper.start()
    try:
        path = write_lines(tmp_path / "h.jsonl", a_history("s-1", "1c/x", events_max=9))
        env = {"LEDGER_WRITER_SOCKET": socket_path, "LEDGER_IMPORT_RETRIES_MAX": "2"}
        env["LEDGER_IMPORT_RETRY_WAIT_MS_MAX"] = "50"
        done = run_import(f"sqlite:///{tmp_path / 'l.db'}", path, "--json", "--quiet", env=env)
    finally:
        stop.set()
        dropper.join(10)
        listener.close()
        os.unlink(socket_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("trying again") == 2
    last = done.stderr.splitlines()[-1]
    assert last.startswith("ledger import: stopped at line 1: the writer could not record it"), last
    assert "run it again to finish" in last
    assert summary_of(done)["stopped"].startswith("stopped at line 1")


def test_an_interrupted_import_names_the_line_up_to_which_every_line_is_recorded(
    database_url: str, tmp_path: Path
) -> None:
    """Ctrl-C: the batches read ahead are recorded before it ends, the lines after them are not, and
    the line it names is exactly where the recorded ones end (it named the line the reading had
    reached, up to several batches further)."""
    source = f"import-{uuid.uuid4().hex[:8]}"
    events = [ev.receipt("shop-1", (f"SKU-{n % 50}", 1)) | {"source": source} for n in range(40_000)]
    path = write_lines(tmp_path / "big.jsonl", events)
    # As a terminal's Ctrl-C finds it: a test worker ignores SIGINT, which a child would inherit; a
    # handler of this process is reset to the default in the child instead.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    importing = subprocess.Popen(
        [str(LEDGER), "import", str(path)],
        env=ledger_env(
            database_url, {"LEDGER_IMPORT_BATCH_EVENTS_MAX": "50", "LEDGER_IMPORT_PROGRESS_INTERVAL_S": "0.2"}
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    signal.signal(signal.SIGINT, ignored)
    try:
        assert importing.stderr is not None
        while " recorded" not in importing.stderr.readline():  # the first progress line: it records
            assert importing.poll() is None, importing.communicate()
        importing.send_signal(signal.SIGINT)
        _, stderr = importing.communicate(timeout=DEADLINE_S)
    finally:
        if importing.poll() is None:
            importing.kill()
    assert importing.returncode == 130, stderr
    [said] = [line for line in stderr.splitlines() if "interrupted" in line]
    through = int(said.split("every line up to ")[1].split(" ")[0])
    assert 0 < through < len(events), said
    assert event_keys(database_url, source) == through


# -- kill -9 in the middle of the file, then the same file again -----------------------------------

KILLED_IMPORT_EVENTS = 6_000
KILLED_IMPORT_AFTER_EVENTS = 2_000  # recorded, as its progress says: killed a third into the file
KILLED_IMPORT_BATCH_EVENTS = "25"  # small batches: many commits, so the kill lands between and inside them
TRADE_SKUS = 12
# What one run records, compared between the run killed and finished and one that ran through.
HISTORY_COLUMNS = (
    "event_id, line_no, store_id, sku, type, outcome, reason, on_hand_delta, reserved_delta, "
    "incoming_delta, on_hand, reserved, incoming, oversold, unknown_reservation"
)


def a_trade_history(store: str, other: str, source: str, events_max: int) -> list[dict[str, Any]]:
    """Receipts, sales refused when short, reservations shipped or released later, transfers to the
    other store, counts and POS sales, drawn with a fixed seed: each line's outcome and effect
    depend on every line before it, so a line recorded twice, or lost, shows in what follows."""
    draw = random.Random(20261208)
    open_reservations: list[tuple[str, str, int]] = []  # (reservation id, sku, qty)
    history: list[dict[str, Any]] = []
    for n in range(events_max):
        sku = f"T-{draw.randrange(TRADE_SKUS)}"
        kind = draw.randrange(10)
        if kind <= 2:
            event = ev.receipt(store, (sku, draw.randint(5, 20)))
        elif kind <= 4:
            event = ev.sale(store, (sku, draw.randint(1, 8)))
        elif kind == 5:
            open_reservations.append((f"r-{n}", sku, draw.randint(1, 4)))
            event = ev.reservation(store, f"r-{n}", (sku, open_reservations[-1][2]))
        elif kind == 6 and open_reservations:
            rid, held, qty = open_reservations.pop(draw.randrange(len(open_reservations)))
            if draw.random() < 0.5:
                event = ev.shipment(store, (held, qty), reservation_id=rid)
            else:
                event = ev.release(store, rid)
        elif kind == 7:
            event = ev.transfer(store, other, f"t-{n}", (sku, draw.randint(1, 3)))
        elif kind == 8 and n % 5 == 0:
            event = ev.count(store, (sku, draw.randint(0, 30)))
        else:
            event = ev.pos_sale(store, (sku, 1))
        event.update(id=f"{source}-{n:06d}", source=source, time=f"2025-03-{1 + n % 28:02d}T10:00:00+03:00")
        history.append(event)
    return history


def recorded_so_far(progress_line: str) -> int:
    """How many events a progress line says are recorded (`import: line 1,250, 20% of the file,
    1,225 recorded, 900 events/s`); 0 for another line."""
    words = progress_line.split(", ")
    if not progress_line.startswith("import: line ") or len(words) < 3:
        return 0
    return int(words[-2].removesuffix(" recorded").replace(",", ""))


def another_database(database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A second fresh ledger database of the same kind."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'another.db'}"
    postgres: EmbeddedPostgres = request.getfixturevalue("postgres")
    return postgres.create_database()


def what_was_recorded(database_url: str, source: str, stores: tuple[str, ...]) -> dict[str, Any]:
    """The history of the file's events in log order (not its positions: a sequence may skip
    numbers after a crash), and the stores' levels and reservations."""
    marks = ", ".join("%s" for _ in stores)
    return {
        "history": db.query(
            database_url,
            f"SELECT {HISTORY_COLUMNS} FROM ledger_history WHERE source = %s ORDER BY position, line_no",
            (source,),
        ),
        "levels": db.query(
            database_url,
            "SELECT store_id, sku, on_hand, reserved, incoming FROM ledger_levels "
            f"WHERE store_id IN ({marks}) ORDER BY store_id, sku",
            stores,
        ),
        "reservations": db.query(
            database_url,
            "SELECT store_id, reservation_id, lines, status, remaining FROM ledger_reservations "
            f"WHERE store_id IN ({marks}) ORDER BY store_id, reservation_id",
            stores,
        ),
    }


@pytest.mark.slow
def test_an_import_killed_9_and_run_again_records_every_line_once(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """kill -9 of `ledger import` in the middle of the file (no handler runs: nothing is landed or
    said), then the same file again: every line is recorded once, the ones before the kill as
    duplicates, and the ledger holds what one run through the file gives."""
    store, other, source = unique("trade"), unique("trade-b"), f"import-{uuid.uuid4().hex[:8]}"
    events = a_trade_history(store, other, source, KILLED_IMPORT_EVENTS)
    path = write_lines(tmp_path / "trade.jsonl", events)
    env = {
        "LEDGER_IMPORT_BATCH_EVENTS_MAX": KILLED_IMPORT_BATCH_EVENTS,
        "LEDGER_IMPORT_PROGRESS_INTERVAL_S": "0.2",
    }
    importing = subprocess.Popen(
        [str(LEDGER), "import", str(path)],
        env=ledger_env(database_url, env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert importing.stderr is not None
        while recorded_so_far(importing.stderr.readline()) < KILLED_IMPORT_AFTER_EVENTS:
            assert importing.poll() is None, importing.communicate()
        importing.kill()
        importing.communicate(timeout=DEADLINE_S)
    finally:
        if importing.poll() is None:
            importing.kill()
    assert importing.returncode == -signal.SIGKILL
    recorded_before = event_keys(database_url, source)
    assert 0 < recorded_before < len(events), recorded_before  # killed in the middle of the file

    again = run_import(database_url, path, "--json", env=env)
    assert again.returncode == 0, again.stderr
    summary = summary_of(again)
    assert summary["duplicate"] == recorded_before, summary
    assert summary["accepted"] + summary["rejected"] == len(events) - recorded_before, summary
    assert summary["rejected"] > 0 and summary["complete"], summary  # some sales were short
    assert event_keys(database_url, source) == len(events)
    keys = db.query(database_url, "SELECT event_id FROM ledger_event_keys WHERE source = %s", (source,))
    assert sorted(row["event_id"] for row in keys) == [event["id"] for event in events]

    reference = another_database(database_url, request, tmp_path)
    through = run_import(reference, path, "--json", "--quiet", env=env)
    assert through.returncode == 0, through.stderr
    assert what_was_recorded(database_url, source, (store, other)) == what_was_recorded(
        reference, source, (store, other)
    )
