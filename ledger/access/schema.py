"""The tokens table, in SQL that PostgreSQL and SQLite both accept; created with the ledger's schema.

Only a token's SHA-256 is kept (`token_sha256`). A revoked token keeps its row (`revoked_at`), so
that its name, which the history shows as the principal of what it did, is never given to another.
Times are fixed-width UTC text, as in ledger/projections/schema.py.
"""

TOKENS_DDL = (
    """CREATE TABLE IF NOT EXISTS ledger_tokens (
        name TEXT NOT NULL PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        stores TEXT,
        sources TEXT,
        expires_at TEXT,
        rate_per_s DOUBLE PRECISION,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT)""",
)
