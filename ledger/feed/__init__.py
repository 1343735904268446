"""The availability feed (CONTRACT §9): what changed after a position, as records of levels.

The records are read from the committed history, never from a batch in the writer, so a record can
only ever describe a commit; publishing them is ledger/kafka/levels_feed.py."""
