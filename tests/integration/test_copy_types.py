"""`ledger rebuild` fills its shadow tables by binary COPY (`BulkInsert.copy`), which sends each value
in the binary form of the column type the insert declares. The server refuses a binary value of
another width ("incorrect binary data format"), so a column whose type a migration changed, without
the insert's declaration changing too, would break only the rebuild. This test holds the two
together: every insert of a batch declares exactly the live table's column types."""

from __future__ import annotations

import pytest
from support import db

from ledger.projections.tables import BATCH_INSERTS
from ledger.storage.opening import open_recorder


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_each_copy_declares_the_live_tables_column_types(database_url: str) -> None:
    open_recorder(database_url, 2, 30).close()
    for insert in BATCH_INSERTS:
        rows = db.query(
            database_url,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
            (insert.table,),
        )
        live = {row["column_name"]: row["data_type"] for row in rows}
        # psycopg's registry names these types as information_schema does.
        declared = dict(zip((name for name, _ in insert.columns), insert.copy_types, strict=True))
        assert declared == {name: live[name] for name in declared}, insert.table
        assert not insert.bytea_columns, f"{insert.table}: a COPY sends str, not bytea"
