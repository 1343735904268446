"""`ledger backup` and `ledger restore` of an embedded (SQLite) ledger, with SQLite's online backup API.

**Backup.** The copy is read from one snapshot of the database, pinned by a read transaction held
on the source connection for the whole copy; the pages are copied `LEDGER_BACKUP_STEP_PAGES` at a
time, with `LEDGER_BACKUP_STEP_PAUSE_MS` between steps to leave the disk to the service. The
database is in WAL mode, so a reader never blocks a writer: the service records meanwhile, and the
backup holds exactly what was committed when it started (the `position` it prints). Without the
pinned snapshot, SQLite restarts a stepped backup from its first page whenever another connection
commits between two steps, and under steady writes it never ends (tried: it was still restarting
after 2,000 steps). The copy is written beside DEST (`DEST.partial`, held by this backup alone) and
given DEST's name only when complete and checked (`PRAGMA quick_check`), and never over a file, so
DEST is never half a database, nor another backup's. DEST is in rollback-journal mode,
one file: reading it leaves no `-wal` or `-shm` beside it.

**Restore.** The backup is copied *into* the target through the same API, in one step: one write
transaction of the target, so nothing ever sees half of it, and SQLite's own journal keeps the
target's WAL and shared-memory files right (renaming a file over a database whose WAL is beside it
would mix the two). The revocations the target made since the backup are in that same transaction
(made in a second transaction, a restore killed between the two would leave revoked tokens working):
the backup API copies into a target that has no transaction open, and commits, so nothing can join
its transaction. When there are revocations to keep, the backup is first copied to a scratch file
beside the target (`TARGET.restoring`, claimed by one restore at a time), they are made there, and
that copy is the one copied into the target. It refuses:
- a target that has recorded events, unless `force` (a restore replaces the whole log);
- a target that is not a ledger (another program's database, or no database at all), even with
  `force`: a mistaken `LEDGER_DATABASE_URL` must not cost another program its data;
- a backup whose schema needs a newer release (migrator.plan, as every start judges it): the
  service would refuse to start on the restored ledger, so nothing is replaced; the same for the
  tables of each package plugged in with a schema of its own (the adapters, when installed:
  plugged_schemas.py), which would refuse to run on it. An older schema is restored as it is,
  the ledger's and theirs: each brings its own up to date when it next opens the database;
- a target that another process has open. Every connection to a WAL database holds a shared lock
  on the dead-man-switch byte of its `-shm` file for as long as it is open; if we cannot take that
  byte exclusively, a `ledger serve` (or any other program) is using it. A service whose database
  changed under it would decide on a state it no longer has (its memory is checked against the
  log's head only), so it must be stopped first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ledger.cli_errors import CommandError
from ledger.storage.migrator import LEDGER_SCHEMA, SchemaTooNew, sqlite_plan_of_cursor
from ledger.storage.plugged_schemas import plugged_in_schemas

EVENTS_TABLE = "ledger_events"
TOKENS_TABLE = "ledger_tokens"
# The shared-memory file's locks (sqlite3 os_unix.c): 8 lock bytes from offset 120, then the
# dead-man-switch byte that every open connection holds shared.
SHM_DEAD_MAN_SWITCH_OFFSET = 120 + 8
PARTIAL_SUFFIX = ".partial"
STAGING_SUFFIX = ".restoring"  # the backup with the revocations to keep, before it is copied in
TABLES_SHOWN = 5  # of another program's database, in the refusal to restore into it

Progress = Callable[[int, int], None]  # (pages copied, pages in all)


@dataclass(frozen=True)
class Copied:
    pages: int
    events: int
    position: int  # the log's head in the copy
    revocations_kept: tuple[str, ...] = ()  # tokens active in the backup, revoked in the ledger replaced
    # Tokens active in the ledger replaced that the backup does not hold (to create again); not one
    # revoked there: named among them, it would be brought back.
    tokens_left_out: tuple[str, ...] = ()


def backup(source: str, destination: str, step_pages: int, step_pause_ms: int, progress: Progress) -> Copied:
    """Copies the ledger at `source` (a SQLite file) to the new file `destination`."""
    if not os.path.exists(source):
        raise CommandError(f"{source}: no such database")
    if os.path.exists(destination):
        raise CommandError(f"{destination} exists: a backup never overwrites a file")
    partial = destination + PARTIAL_SUFFIX
    busy = CommandError(f"another backup to {destination} is running: wait for it to end")
    with (
        _claimed(partial, destination, busy),
        _connection(source, read_only=True) as src,
        _connection(partial) as dst,
    ):
        src.execute("BEGIN")  # the snapshot every step reads from (see the module's docstring)
        events, position = _log_of(src, source)

        def step(status: int, remaining: int, total: int) -> None:
            progress(total - remaining, total)
            if step_pause_ms and remaining:
                time.sleep(step_pause_ms / 1000)

        src.backup(dst, pages=step_pages, progress=step)
        src.execute("COMMIT")
        _check(dst, partial)
        pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
        # The copy carries the source's WAL mode: read later, even read-only, it would grow a -wal
        # and a -shm beside it. In rollback mode it is one file; a restore sets the target's back.
        _set_journal_mode(dst, partial, "delete")
        _fsync(partial)
        _publish(partial, destination)
    return Copied(pages, events, position)


@contextlib.contextmanager
def _claimed(partial: str, destination: str, busy: CommandError) -> Iterator[None]:
    """Holds a new, empty partial copy for this backup (or restore) alone until the block ends, and
    removes it if the block fails; `busy` when another holds it. Two backups to one DEST at once
    would otherwise remove and overwrite each other's copy. A partial copy that is not held is what
    an interrupted one left: its name is taken over, never its contents (killed between giving the
    copy DEST's name and removing this one, it is a finished backup under a second name, which
    emptying would wipe whatever it is called now). flock, not POSIX locks: SQLite's own locks on
    the same file are POSIX ones, which a flock neither meets nor releases."""
    try:
        left = _flocked_open(partial, os.O_CREAT, busy)
    except OSError as error:  # a folder that does not exist, or that we may not write
        raise CommandError(f"{destination}: cannot write beside it: {error.strerror}") from None
    try:
        os.remove(partial)  # the name only: a finished backup it also names is kept
        try:
            fd = _flocked_open(partial, os.O_CREAT | os.O_EXCL, busy)
        except FileExistsError:  # another backup made it in between
            raise busy from None
    finally:
        os.close(left)
    try:
        if os.stat(partial).st_ino != os.fstat(fd).st_ino:  # removed and made again in between
            raise busy
        try:
            yield
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
            raise
    finally:
        os.close(fd)


def _flocked_open(path: str, flags: int, busy: CommandError) -> int:
    fd = os.open(path, os.O_RDWR | flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise busy from None
    return fd


def _publish(partial: str, destination: str) -> None:
    """Gives the checked copy its name, never over a file: one that appeared at DEST since the
    backup began (another program, or a backup that began first) is kept, and this copy removed."""
    try:
        try:
            os.link(partial, destination)
        except FileExistsError:
            raise CommandError(f"{destination} exists: a backup never overwrites a file") from None
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP):
                raise
            # A file system without hard links: a rename, which could only replace a file that
            # appeared in the instant since this check.
            if os.path.exists(destination):
                raise CommandError(f"{destination} exists: a backup never overwrites a file") from None
            os.rename(partial, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    _fsync_directory(destination)


def restore(source: str, target: str, *, force: bool, progress: Progress) -> Copied:
    """Replaces the ledger at `target` (a SQLite file) with the backup at `source`."""
    if not os.path.exists(source):
        raise CommandError(f"{source}: no such backup")
    if not os.path.isfile(source):  # SQLite would open a directory and fail on it as "disk I/O error"
        raise CommandError(f"{source}: not a file; a backup is the one file `ledger backup` wrote")
    with _connection(source, read_only=True) as src:
        _check(src, source)
        events, position = _log_of(src, source)
        _require_known_schema(src, source)
        if os.path.exists(target):
            if in_use(target):
                raise CommandError(
                    f"{target} is open in another process (a running `ledger serve`?): stop it first"
                )
            kept = _events_in(target)
            if kept and not force:
                raise CommandError(
                    f"{target} holds {kept} recorded events; --force replaces them with the backup's"
                )
            replaced = _tokens_of(target)
        else:
            replaced = {}
        backed_up = _tokens_of(source)
        again = _revocations_to_keep(backed_up, replaced)
        pages = int(src.execute("PRAGMA page_count").fetchone()[0])
        with _connection(target) as dst, _as_restored(src, target, again) as restored:
            # One step: the target changes in one transaction, the revocations kept with it.
            restored.backup(dst, pages=-1, progress=lambda status, remaining, total: progress(total, total))
            _check(dst, target)
            _set_journal_mode(dst, target, "wal")  # the ledger's mode; the backup is in rollback mode
    left_out = tuple(
        sorted(
            name
            for name, (_digest, revoked_at) in replaced.items()
            if name not in backed_up and revoked_at is None
        )
    )
    return Copied(pages, events, position, tuple(name for name, _ in again), left_out)


# A token as the tokens table keeps it: its hash (the same token in both ledgers) and revocation.
_TokenState = tuple[str, str | None]


def _tokens_of(path: str) -> dict[str, _TokenState]:
    """Every token of the ledger at `path` by name; none when it has no tokens table (yet)."""
    with _connection(path, read_only=True) as connection:
        try:
            rows = connection.execute(f"SELECT name, token_sha256, revoked_at FROM {TOKENS_TABLE}").fetchall()
        except sqlite3.OperationalError:  # no such table: a ledger older than tokens, or an empty file
            return {}
    return {str(name): (str(digest), revoked_at) for name, digest, revoked_at in rows}


# A revocation to make again in the restored ledger: the token's name, and when it was revoked.
_Revocation = tuple[str, str]


def _revocations_to_keep(
    backed_up: dict[str, _TokenState], replaced: dict[str, _TokenState]
) -> tuple[_Revocation, ...]:
    """Every token that the backup holds active and the ledger replaced had revoked since, by name:
    a revocation is a decision about who may act from now on (a leaked token, a till taken out of
    service), which a restore of the log must not undo. Matched by name and hash, so only the very
    same token."""
    return tuple(
        sorted(
            (name, revoked_at)
            for name, (digest, revoked_at) in replaced.items()
            if revoked_at is not None and backed_up.get(name) == (digest, None)
        )
    )


@contextlib.contextmanager
def _as_restored(
    src: sqlite3.Connection, target: str, again: tuple[_Revocation, ...]
) -> Iterator[sqlite3.Connection]:
    """The database to copy into the target: the backup itself, or, when revocations are to be
    kept, a scratch copy of it in `TARGET.restoring` with them made (see the module's docstring).
    Killed before the copy into the target commits, a restore leaves the target as it was, its
    revocations with it. The scratch copy is made only then (it doubles the copy's work), but its
    name is claimed by every restore: two restores into one target never run at once, and a
    scratch copy that a killed restore left is removed by the next."""
    staging = target + STAGING_SUFFIX
    busy = CommandError(f"another restore into {target} is running: wait for it to end")
    with _claimed(staging, target, busy):
        try:
            if not again:
                yield src
                return
            with _connection(staging) as scratch:
                # Scratch: if this process dies, the target is untouched and the next restore
                # copies the backup again; nothing here needs a journal, nor to reach the disk.
                scratch.execute("PRAGMA journal_mode = OFF")
                scratch.execute("PRAGMA synchronous = OFF")
                src.backup(scratch, pages=-1)
                # A backup in WAL mode (not one `ledger backup` wrote) gives the copy its mode: the
                # WAL it would write beside it, left by a kill, would be read into the next copy.
                _set_journal_mode(scratch, staging, "off")
                _keep_revocations(scratch, again)
                yield scratch
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(staging)


def _keep_revocations(connection: sqlite3.Connection, again: tuple[_Revocation, ...]) -> None:
    """Revokes `again`'s tokens in the copy to restore, as the ledger replaced had revoked them."""
    connection.executemany(
        f"UPDATE {TOKENS_TABLE} SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
        [(revoked_at, name) for name, revoked_at in again],
    )


def _require_known_schema(connection: sqlite3.Connection, path: str) -> None:
    """A backup of a ledger whose schema this release cannot run on (a contract migration of a newer
    release) is refused before the target is touched: restored, it replaced the ledger, and then
    `ledger serve` refused to start on it. The same judgement as every start's (migrator.plan): a
    newer schema that only added (expand) is restored, as `ledger serve` runs on it. The same for
    the tables of every package plugged in with a schema of its own, as each judges them when it
    opens the database (the adapters: `ledger adapters run` would refuse to start)."""
    cursor = connection.cursor()
    cursor.row_factory = sqlite3.Row
    for plugin, schema in (("", LEDGER_SCHEMA), *plugged_in_schemas()):
        try:
            sqlite_plan_of_cursor(cursor, schema)
        except SchemaTooNew as error:
            whose = f"this release's {plugin}" if plugin else "this release"
            raise CommandError(
                f"{path} is a backup {whose} cannot run on, nothing restored: {error}"
            ) from None


def _set_journal_mode(connection: sqlite3.Connection, path: str, mode: str) -> None:
    """SQLite answers the mode it is in, which is the old one when it could not switch (busy)."""
    now = str(connection.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]).lower()
    if now != mode:
        raise CommandError(f"{path}: could not switch it to {mode} journal mode (it is in {now} mode)")


def in_use(database: str) -> bool:
    """Whether another process has the WAL database open (see the module's docstring). Call it with
    no connection of this process open on the file: POSIX locks are per process."""
    try:
        fd = os.open(database + "-shm", os.O_RDWR)
    except FileNotFoundError:
        return False  # nobody has opened it in WAL mode since its last connection closed
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, SHM_DEAD_MAN_SWITCH_OFFSET)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, SHM_DEAD_MAN_SWITCH_OFFSET)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def _connection(path: str, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    try:
        if read_only:
            uri = f"{Path(path).resolve().as_uri()}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            connection = sqlite3.connect(path, isolation_level=None)
    except sqlite3.OperationalError as error:  # a folder that does not exist, or that we may not write
        raise CommandError(f"{path}: {error}") from None
    try:
        yield connection
    finally:
        connection.close()


def _log_of(connection: sqlite3.Connection, path: str) -> tuple[int, int]:
    """(events, head) of a ledger database; a file that is not one is refused."""
    try:
        row = connection.execute(f"SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM {EVENTS_TABLE}").fetchone()
    except sqlite3.DatabaseError as error:  # not a database, or no ledger in it
        raise CommandError(f"{path} is not a ledger database: {error}") from None
    return int(row[0]), int(row[1])


def _events_in(path: str) -> int:
    """The events recorded in the ledger at `path`; 0 for an empty database. Anything else is
    refused, even with --force (which is for a ledger's own events): a restore would replace all of
    another program's database, or of a file that is none."""
    with _connection(path, read_only=True) as connection:
        try:
            tables = sorted(
                str(row[0])
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            )
            if EVENTS_TABLE in tables:
                return int(connection.execute(f"SELECT COUNT(*) FROM {EVENTS_TABLE}").fetchone()[0])
        except sqlite3.DatabaseError as error:
            raise CommandError(
                f"{path} is not a SQLite database ({error}): restore into another path"
            ) from None
    if tables:
        shown = ", ".join(tables[:TABLES_SHOWN]) + (", ..." if len(tables) > TABLES_SHOWN else "")
        raise CommandError(f"{path} is not a ledger (it holds the tables {shown}): restore into another path")
    return 0


def _check(connection: sqlite3.Connection, path: str) -> None:
    try:
        result = connection.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:  # not a database at all
        raise CommandError(f"{path} is not a ledger database: {error}") from None
    if result != "ok":
        raise CommandError(f"{path} fails SQLite's quick_check: {result}")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: str) -> None:
    _fsync(os.path.dirname(os.path.abspath(path)))
