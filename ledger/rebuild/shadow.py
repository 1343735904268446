"""PostgreSQL: the shadow tables a rebuild fills beside the live projections, and the swap.

The shadow tables are made by the rebuild itself, not by the schema, from whatever the live tables
are at that moment (`LIKE`: columns, defaults, constraints, storage parameters), so a migration
that changes a projection table needs no change here. They are filled without indexes; each live
index is then made again on its shadow (from `pg_get_indexdef`, under a name of its own), the
primary key from its index. The swap, inside the writers' lock, renames each live table and its
indexes away, gives the shadow table and its indexes the live names, and replaces the views that
read the tables (a view follows a renamed table, so it would go on reading the old one). The old
tables are dropped after the commit, outside the lock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.sql import Row, SqlTx

SHADOW_SUFFIX = "__rebuild"
RETIRED_SUFFIX = "__retired"
NAME_BYTES_MAX = 63  # PostgreSQL's identifier length: a longer name would be cut, silently


def shadow_of(table: str) -> str:
    return _named(table, SHADOW_SUFFIX)


def retired_of(table: str) -> str:
    return _named(table, RETIRED_SUFFIX)


def _named(name: str, suffix: str) -> str:
    named = name + suffix
    assert len(named.encode()) <= NAME_BYTES_MAX, named
    return named


@dataclass(frozen=True)
class Index:
    name: str
    definition: str  # CREATE [UNIQUE] INDEX name ON schema.table ...
    primary: bool


def drop_leftovers(tx: SqlTx, tables: Sequence[str]) -> None:
    """What a rebuild that stopped half way left: its shadow tables, or retired ones not yet dropped."""
    for table in tables:
        tx.execute(f"DROP TABLE IF EXISTS {shadow_of(table)}, {retired_of(table)}")


def create_shadow(tx: SqlTx, table: str) -> None:
    """An empty table like the live one, without its indexes."""
    row = tx.fetchone("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,))
    options = row["reloptions"] if row else None
    storage = f" WITH ({', '.join(options)})" if options else ""
    tx.execute(
        f"CREATE TABLE {shadow_of(table)} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
        f"INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION){storage}"
    )


def indexes(tx: SqlTx, table: str) -> list[Index]:
    rows = tx.fetchall(
        "SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition, i.indisprimary AS primary "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
        "ORDER BY c.relname",
        (table,),
    )
    return [Index(row["name"], row["definition"], bool(row["primary"])) for row in rows]


_INDEX_HEAD = re.compile(r"^(CREATE (?:UNIQUE )?INDEX) (\S+) ON (\S+) ")


def shadow_index_statements(table: str, index: Index) -> list[str]:
    """The statements that make `index` again on the shadow of `table`."""
    name = shadow_of(index.name)
    statement, replaced = _INDEX_HEAD.subn(rf"\1 {name} ON {shadow_of(table)} ", index.definition, count=1)
    assert replaced == 1, index.definition
    if not index.primary:
        return [statement]
    return [statement, f"ALTER TABLE {shadow_of(table)} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}"]


def columns(tx: SqlTx, table: str) -> list[tuple[str, str]]:
    rows = tx.fetchall(
        "SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attname",
        (table,),
    )
    return [(row["name"], row["type"]) for row in rows]


def same_shape(tx: SqlTx, table: str) -> bool:
    """Whether the shadow has the live table's columns and, for each of its indexes, one of the
    same definition under its shadow name, and no other: a migration that ran during the rebuild
    changed the live table after the shadow was made (an index made, dropped, or made again
    under the same name on other columns, whose definition the swap would have lost)."""
    shadowed = {index.name: _shape(index) for index in indexes(tx, shadow_of(table))}
    return columns(tx, table) == columns(tx, shadow_of(table)) and shadowed == {
        shadow_of(index.name): _shape(index) for index in indexes(tx, table)
    }


def _shape(index: Index) -> tuple[str, str, bool]:
    """An index's definition without its name and table: its kind, then what follows `ON table`."""
    head = _INDEX_HEAD.match(index.definition)
    assert head is not None, index.definition
    return head.group(1), index.definition[head.end() :], index.primary


def lock_order(tx: SqlTx, tables: Sequence[str]) -> list[str]:
    """The live tables and their shadows, in the reverse of the order an autovacuum worker visits
    them: the order of their rows in pg_class, which the worker scans for its list. A worker that
    holds one of them when the swap waits for it is cancelled (after `deadlock_timeout`) and moves
    on to the next table in its list; locked in its own order, that is the table the swap asks for
    next, and the swap waits once per table. Locked in the reverse order, the tables after it are
    the swap's already, and the worker skips them."""
    names = [name for table in tables for name in (table, shadow_of(table))]
    rows = tx.fetchall(
        "SELECT relname FROM pg_class WHERE oid = ANY(%s::regclass[]) ORDER BY ctid DESC", (names,)
    )
    return [str(row["relname"]) for row in rows]


def lock(tx: SqlTx, names: Sequence[str], wait_ms: int) -> None:
    """The tables and views, in this order, for the renames: waits at most `wait_ms` for their
    readers."""
    tx.execute(f"SET LOCAL lock_timeout = '{int(wait_ms)}ms'")
    tx.execute(f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE")


def with_views(tx: SqlTx, order: Sequence[str], tables: Sequence[str]) -> list[str]:
    """The lock order with each view that reads the live tables (the swap makes it again) just
    before the first of its tables. A reader of a view locks the view, then its tables: a swap that
    held the tables and then asked for the view waited for such a reader while it waited for the
    swap, a deadlock, and the whole rebuild failed. (Locking a view locks its tables too, so it
    goes where its first table went, not ahead of the others: `lock_order`'s reason holds.)"""
    rows = tx.fetchall(
        "SELECT DISTINCT v.oid::regclass::text AS view, d.refobjid::regclass::text AS read "
        "FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
        "WHERE v.relkind = 'v' AND d.refobjid = ANY(%s::regclass[])",
        (list(tables),),
    )
    reads: dict[str, set[str]] = {}
    for row in rows:
        reads.setdefault(str(row["view"]), set()).add(str(row["read"]))
    placed: list[str] = []
    for name in order:
        placed += sorted(view for view, read in reads.items() if name in read and view not in placed)
        placed.append(name)
    return placed


def _views(tx: SqlTx, tables: Sequence[str]) -> list[Row]:
    return tx.fetchall(
        "SELECT DISTINCT v.oid::regclass::text AS name, pg_get_viewdef(v.oid) AS definition "
        "FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
        "WHERE v.relkind = 'v' AND d.refobjid = ANY(%s::regclass[]) ORDER BY 1",
        (list(tables),),
    )


def swap(tx: SqlTx, tables: Sequence[str]) -> None:
    """Each shadow table takes its live table's name and its indexes' names; the views that read
    the live tables are made again, so that they read the new ones."""
    views = _views(tx, tables)
    for table in tables:
        copy_access(tx, table)
        live_indexes = indexes(tx, table)
        for index in live_indexes:
            tx.execute(f"ALTER INDEX {index.name} RENAME TO {retired_of(index.name)}")
        tx.execute(f"ALTER TABLE {table} RENAME TO {retired_of(table)}")
        for index in live_indexes:
            tx.execute(f"ALTER INDEX {shadow_of(index.name)} RENAME TO {index.name}")
        tx.execute(f"ALTER TABLE {shadow_of(table)} RENAME TO {table}")
    for view in views:
        tx.execute(f"CREATE OR REPLACE VIEW {view['name']} AS {view['definition']}")


def copy_access(tx: SqlTx, table: str) -> None:
    """The live table's owner and privileges onto its shadow, which the rebuild's role made and
    `LIKE` gives neither: run as another role than the owner (a superuser), a swap left tables the
    service's role, their owner until then, could no longer write, and every grant (a report's
    SELECT) was gone. Under the swap's lock, so that a grant made meanwhile is kept too."""
    row = tx.fetchone(
        "SELECT quote_ident(pg_get_userbyid(relowner)) AS owner FROM pg_class WHERE oid = %s::regclass",
        (table,),
    )
    assert row is not None, table
    tx.execute(f"ALTER TABLE {shadow_of(table)} OWNER TO {row['owner']}")
    grants = tx.fetchall(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END "
        "AS grantee, a.privilege_type AS privilege, a.is_grantable AS grantable "
        "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s::regclass ORDER BY 1, 2",
        (table,),
    )
    for grant in grants:
        option = " WITH GRANT OPTION" if grant["grantable"] else ""
        tx.execute(f"GRANT {grant['privilege']} ON {shadow_of(table)} TO {grant['grantee']}{option}")


def drop_retired(tx: SqlTx, tables: Sequence[str]) -> None:
    for table in tables:
        tx.execute(f"DROP TABLE IF EXISTS {retired_of(table)}")
