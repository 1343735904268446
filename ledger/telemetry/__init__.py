"""What the service tells its operators: request ids, log lines, and plain histograms for metrics.

Imports nothing of the ledger, so that every layer (the writer, the HTTP edge, the Kafka intake)
can use it."""
