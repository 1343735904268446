"""What the service tells its operators: request ids, log lines, and plain histograms for metrics.

Imports nothing of the ledger, so that every layer (the writer, the HTTP edge, the Kafka intake)
can use it."""

# Prometheus' text exposition format 0.0.4: what prometheus_client's generate_latest writes, and the
# type its own servers answer it with to a scraper that asks for no other. Not the library's
# CONTENT_TYPE_LATEST, which says 1.0.0 (since 0.22) over the same 0.0.4 body.
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
