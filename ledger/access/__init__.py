"""Access control (CONTRACT §5): scope rules (pure), tokens as secrets, the tokens table, this
process's copy of the tokens, and per-token rate limits. The HTTP edge (ledger/api) applies them."""
