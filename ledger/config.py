"""Every setting and limit of the service, read from LEDGER_* environment variables."""

from __future__ import annotations

import re
import ssl
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.access.hosts import ANY_HOST, host_name
from ledger.domain.ids import ID_PATTERN, ID_REGEX

# A SKU id (CONTRACT §1), as a per-SKU unit's key names it.
_UNIT_SKU = ID_PATTERN

# What a produced record carries beyond its key, value and headers (batch and record framing), and
# more: a dead letter cut to its limits plus this always fits in the producer's request.
KAFKA_RECORD_FRAMING_BYTES_MAX = 1024
# The writer's wait for PostgreSQL beyond its two lock waits, when LEDGER_DB_WRITER_ANSWER_WAIT_S is unset.
WRITER_ANSWER_MARGIN_S = 30.0


PEER_SECRET_CHARS_MIN = 16
# Kafka's rule for a topic's name.
KAFKA_TOPIC_CHARS_MAX = 249
_KAFKA_TOPIC = re.compile(rf"[A-Za-z0-9._-]{{1,{KAFKA_TOPIC_CHARS_MAX}}}")


PORT_MAX = 65535
HTTP_WORKERS_MAX = 64


class Settings(BaseSettings):
    # No setting is infinite or NaN: a limit of inf is no limit, and time arithmetic on it fails later.
    model_config = SettingsConfigDict(
        env_prefix="LEDGER_", extra="ignore", allow_inf_nan=False, hide_input_in_errors=True
    )

    database_url: str = Field(
        "sqlite:///ledger.db", description="sqlite:///file or postgresql://user:pass@host:port/db"
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=PORT_MAX)
    http_workers: int = Field(
        1, ge=1, le=HTTP_WORKERS_MAX, description="worker processes, each a full instance"
    )
    # The HTTP server's own limits, for when no proxy stands in front (ledger/api/connections.py):
    # a connection that sends nothing (first request or next one) is closed after the idle timeout;
    # a request's headers must arrive whole within the header timeout of its first byte, and its
    # body within the body timeout of its headers, else the connection is cut (slowloris).
    http_idle_timeout_s: float = Field(5.0, gt=0, le=3600, description="keep-alive and unused connections")
    http_header_timeout_s: float = Field(10.0, gt=0, le=3600)
    http_body_timeout_s: float = Field(60.0, gt=0, le=3600)
    # An answer the client does not read: past this long with the connection's send buffer full,
    # it is cut (each such connection holds a request's task and counts against the maximum).
    http_write_timeout_s: float = Field(30.0, gt=0, le=3600, description="a client that stops reading")
    http_header_bytes_max: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Connections and requests at once per worker process; past it 503 `over-capacity` (ledger/api/gate.py).
    http_connections_max: int = Field(2048, ge=1)

    # Access (CONTRACT §5, ledger/access). Tokens are required once one exists, or with `required`;
    # `off` only lets the open service (no token) listen on an address other than loopback.
    auth: Literal["required", "off"] | None = Field(None, description="unset: required once a token exists")
    metrics_auth: Literal["open", "required"] = Field("open", description="required: /metrics needs a token")
    # What the service tells its operators (ledger/telemetry): every process's log lines in one
    # format, an access log line per HTTP request when on, kafka-python's own lines from this level.
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line")
    access_log: bool = Field(False, description="on: one line per HTTP request")
    kafka_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="the Kafka client library's loggers (kafka.*)"
    )
    # OpenTelemetry spans (ledger/telemetry/tracing.py), off by default; needs the `tracing` extra.
    # The exporter's endpoint, headers and service name come from the standard OTEL_* variables.
    tracing: Literal["off", "console", "otlp"] = Field(
        "off", description="console: spans on stdout; otlp: to OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    # How often each serving process re-reads the tokens: a change reaches all of them within 2 s.
    auth_refresh_ms: int = Field(500, ge=10, le=1000)
    auth_last_use_flush_s: float = Field(
        10.0, gt=0, le=86_400, description="how often a token's last use is written"
    )
    allowed_hosts: str | None = Field(
        None, description="Host names answered, comma-separated, or *; unset: localhost, 127.0.0.1, [::1]"
    )
    cors_origins: str | None = Field(
        None, description="origins allowed cross-site, comma-separated; unset: none"
    )
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset: no Kafka")
    kafka_topic: str = "stock.events"
    kafka_group: str = "stock-ledger"
    # The broker authenticates the ledger's own clients (consumer, producers, admin) with these.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(
        None, description="CA certificates (PEM) the broker's is checked with"
    )

    # The Kafka intake (ledger/kafka): its topics, the consumer group's timing and its limits.
    kafka_results_topic: str = "stock.events.results"
    kafka_dlq_topic: str = "stock.events.dlq"
    kafka_client_id: str = Field("stock-ledger", description="client id prefix; host and pid follow")
    # One poll is one write batch (one submit, one transaction when the writer is idle).
    kafka_batch_records_max: int = Field(2000, ge=1, le=10_000)
    kafka_poll_timeout_ms: int = Field(500, ge=10, le=10_000)
    kafka_fetch_partition_bytes_max: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    # A member silent for the session timeout is dropped and its partitions move to the others.
    kafka_session_timeout_ms: int = Field(10_000, ge=1000)
    # Building the consumer waits this long for a first broker (connect, TLS, SASL, versions and
    # metadata); a stop asked meanwhile waits as long. Past it: "no broker answered", tried again.
    kafka_bootstrap_timeout_ms: int = Field(
        10_000,
        ge=1000,
        le=120_000,
        description="the consumer's wait for a first broker; a stop waits as long",
    )
    kafka_heartbeat_interval_ms: int = Field(3000, ge=100)
    # A batch (record, publish, commit) must be done within this, or the member leaves the group.
    kafka_poll_interval_ms_max: int = Field(120_000, ge=5000)
    # A send's wait for room in the producer's buffer, and a flush's. A result or dead letter is sent
    # again only once the producer gave it up (its delivery timeout, 120 s), or this long after that.
    kafka_publish_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a send's wait for the producer's buffer; results sent again only after 120 s + this",
    )
    kafka_commit_timeout_s: float = Field(30.0, gt=0)
    kafka_linger_ms: int = Field(5, ge=0, le=1000)
    kafka_produce_batch_bytes: int = Field(256 * 1024, ge=16 * 1024)
    kafka_retry_backoff_ms_max: int = Field(5000, ge=10, description="longest wait to retry a failed batch")
    kafka_shutdown_timeout_s: float = Field(60.0, gt=0, description="SIGTERM: time to finish the batch")
    # The pipeline: while one batch is recorded, the next is polled and read. A batch is in flight
    # from its poll to its commit (waiting to be recorded, recording, or waiting for the broker to
    # acknowledge its results); past this many, fetching pauses until the oldest is committed.
    kafka_batches_in_flight_max: int = Field(3, ge=1, le=16)
    kafka_poll_in_flight_timeout_ms: int = Field(
        10, ge=1, le=1000, description="poll wait while batches are in flight: how soon one done is seen"
    )
    # A rebalance takes this member's partitions: it finishes (records, publishes, commits) what is in
    # flight for this long at most, and hands the rest over uncommitted. It blocks the client's
    # network thread (heartbeats too), so it stays well below the session timeout.
    kafka_revoke_timeout_ms: int = Field(3000, ge=0)
    # The producer: its largest request, and how many publishes in a row may fail before it is
    # closed and built anew (a producer can fail for good, e.g. after the broker lost its state).
    kafka_produce_request_bytes_max: int = Field(1024 * 1024, ge=64 * 1024)
    kafka_producer_failures_max: int = Field(3, ge=1)
    # What the producer holds unacknowledged at most; when full, a send waits (the publish timeout
    # at most) for the broker to take some. The intake holds at most a few batches' results.
    kafka_produce_buffer_records_max: int = Field(100_000, ge=1000, le=10_000_000)
    kafka_produce_buffer_bytes_max: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    # A failed publish: the batch's outcomes are durable already, so its results (and dead letters)
    # are published again (by a new producer when the old one failed for good), up to this many
    # times; after that the batch is read again from Kafka (its events then answer `duplicate`).
    kafka_republishes_max: int = Field(3, ge=0)
    # A batch the writer refuses (SubmissionFailed: a bug, or an event it cannot store) is recorded
    # again one event at a time, and an event refused alone goes to the dead-letter topic. More
    # refused events than this in one batch, or in a row with none recorded between them (whatever
    # the batches), look like a writer that refuses everything (a bug, a schema it does not know)
    # rather than bad events: the batch is then read again after a backoff, as after an outage,
    # instead of the stream going to the dead-letter topic.
    kafka_refused_per_batch_max: int = Field(10, ge=1)
    # /readyz: the intake is not ready once the broker has left it unanswered this long (a heartbeat
    # past its interval, or results sent and not acknowledged), or once one turn of its poll loop
    # has lasted this long (the loop does not return).
    kafka_unanswered_ms_max: int = Field(4000, ge=100)
    kafka_loop_turn_ms_max: int = Field(15_000, ge=1000)
    # A dead letter always fits in one request: its value, key and headers are cut to these.
    kafka_dlq_value_bytes_max: int = Field(256 * 1024, ge=1024)
    kafka_dlq_key_bytes_max: int = Field(1024, ge=64)
    kafka_dlq_headers_bytes_max: int = Field(64 * 1024, ge=4096)
    # The availability feed (CONTRACT §9): one record per changed store and SKU on this topic, after
    # each commit, read from the log by one publisher per database (ledger/kafka/levels_feed.py).
    # Off without Kafka; LEDGER_FEED_ENABLED=false turns it off with Kafka on.
    kafka_levels_topic: str = Field("stock.levels", description="the availability feed (CONTRACT §9)")
    feed_enabled: bool = Field(True, description="publish the availability feed when Kafka is on")
    # How often the publisher looks for commits past its position.
    feed_poll_ms: int = Field(50, ge=5, le=10_000)
    # History rows read (and records held) per round; an event larger than this is read whole.
    feed_rows_per_round_max: int = Field(5000, ge=1, le=100_000)
    # A round unacknowledged this long is warned of (ledger_feed_unacknowledged_seconds shows the wait).
    # It is published again only once the producer gave it up (its delivery timeout, 120 s), or 120 s
    # and this after its last record was sent should the producer never answer.
    feed_publish_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a round unacknowledged this long is warned of; sent again only after 120 s + this",
    )
    feed_retry_backoff_ms_max: int = Field(5000, ge=10, description="longest wait to publish a round again")
    # How often an instance that does not publish the feed tries to take it over.
    feed_takeover_ms: int = Field(1000, ge=10, le=60_000)
    kafka_metrics_host: str = "127.0.0.1"
    kafka_metrics_port: int | None = Field(
        None, ge=1, le=PORT_MAX, description="ledger consume: /metrics, /readyz, /healthz"
    )

    # Input limits (CONTRACT §1 and §3).
    lines_per_event_max: int = Field(1000, ge=1, le=1000)
    events_per_request_max: int = Field(1000, ge=1, le=1000)
    skus_per_lookup_max: int = Field(1000, ge=1, le=1000)
    policy_channels_max: int = Field(32, ge=1, le=1000, description="channels with a quota in one policy")
    body_bytes_max: int = Field(16 * 1024 * 1024, ge=1024)
    # Reservations across stores and sourcing (CONTRACT §6). The search's work grows with lines
    # times candidates, and in the worst case with the sets it walks: each is bounded, 422 beyond.
    reservation_stores_max: int = Field(
        20, ge=1, le=100, description="stores one reservation across stores spans at most"
    )
    sourcing_lines_max: int = Field(50, ge=1, le=1000, description="lines of one sourcing request at most")
    sourcing_candidates_max: int = Field(
        100,
        ge=1,
        le=1000,
        description="candidate stores of one sourcing request at most (given or by default)",
    )
    sourcing_search_steps_max: int = Field(
        5_000,
        ge=100,
        description="sets of stores one sourcing search may walk; an order that needs more: 422",
    )
    history_page_max: int = Field(1000, ge=1, le=1000)
    history_page_default: int = Field(100, ge=1, le=1000)
    timeline_points_max: int = Field(
        500, ge=2, le=10_000, description="points of a timeline at most; beyond, evenly thinned"
    )
    explain_items_max: int = Field(
        10_000, ge=1, description="open reservations or transfers one explain lists at most; beyond, 422"
    )
    # A unit's size in base units: at least 1, or a receipt in that unit would take units away.
    units: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description='JSON: {"box12": 12, "SKU-1/box": 6}'
    )

    # The console at /ui (ledger/api/console): every list it shows has a named maximum.
    console_skus_found_max: int = Field(50, ge=1, le=1000, description="SKUs one search lists at most")
    console_stores_max: int = Field(200, ge=1, le=10_000, description="stores the console lists at most")
    console_reservations_max: int = Field(
        200, ge=1, le=10_000, description="open reservations of a store the console lists at most"
    )
    console_expiring_within_s: int = Field(
        3600, ge=1, le=30 * 86400, description="a reservation expiring within this is 'soon' in the console"
    )
    console_entries_page_rows: int = Field(
        100, ge=1, le=1000, description="entries a page of the console's every-entry page lists at most"
    )

    # The group-commit writer. `ledger serve` runs it in a process of its own and tells its HTTP
    # workers where: LEDGER_WRITER_SOCKET. Unset elsewhere: the writer is a thread of the process.
    writer_process: bool = Field(True, description="ledger serve: run the writer in its own process")
    writer_socket: str | None = None
    # With the writer in its own process, the HTTP workers run at this lower CPU priority, so that
    # on a small machine the commit path (writer and database, little CPU but many wake-ups) is
    # not kept waiting by request parsing. Measured on 2 cores: hot-SKU reservations +20 %.
    http_nice: int = Field(10, ge=0, le=19)
    writer_batch_events_max: int = Field(2000, ge=1)
    writer_retries_max: int = Field(3, ge=0)
    writer_optimistic: bool = Field(
        True, description="PostgreSQL: one round trip per batch when memory holds all it reads"
    )
    writer_queue_submissions_max: int = Field(20000, ge=1)
    # A batch that takes longer than this from being taken to its callers answered is logged as
    # a warning naming its requests' ids (0: every batch).
    writer_slow_batch_ms: int = Field(1000, ge=0)
    # What the writer process holds for one client that does not read (its answers and the
    # commit broadcasts); past it the client is disconnected, so that the writer never waits on it.
    writer_client_outbox_bytes_max: int = Field(32 * 1024 * 1024, ge=1024)
    # Several instances on one PostgreSQL: set on each to where its writer takes the others' relays
    # should it lead (host:port, reachable from the other instances). Then one writer records for
    # every instance, and the others relay to it (ledger/writer/leadership.py). Unset: each
    # instance's writer records itself, taking turns with the others under the writers' lock.
    writer_peer_address: str | None = Field(
        None,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
        description="host:port where this instance's writer, if it leads, takes the other instances' writes",
    )
    # The secret the writers of one database share, with LEDGER_WRITER_PEER_ADDRESS: a relay and the
    # leader each prove they know it before either reads anything of the other (at least 16 characters).
    writer_peer_secret: SecretStr | None = Field(
        None, description="the peers' shared secret (16+ characters)"
    )
    request_timeout_s: float = Field(30.0, gt=0)

    # `ledger import FILE` (ledger/importer): envelopes are recorded in batches of this many; the
    # file is read ahead by at most this many batches while one is recorded (memory stays bounded
    # whatever the file's size); a line longer than the limit is reported invalid, never held whole.
    import_batch_events_max: int = Field(1000, ge=1, le=10_000)
    import_batches_ahead_max: int = Field(2, ge=1, le=16)
    import_line_bytes_max: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # A batch the writer cannot take now (its database restarting, say) is sent again this many
    # times, waiting longer each time (up to the wait's maximum); then the import stops, exit 2.
    import_retries_max: int = Field(8, ge=0)
    import_retry_wait_ms_max: int = Field(5000, ge=10)
    import_progress_interval_s: float = Field(
        10.0, gt=0, description="between progress lines when stderr is no terminal"
    )

    # Reservation expiry.
    expiry_interval_ms: int = Field(500, ge=10, le=10**10)  # at most about 115 days
    expiry_batch_max: int = Field(500, ge=1)

    # This instance's in-memory state and how it keeps up with other instances' writes.
    cache_levels_max: int = Field(1_000_000, ge=1000)
    cache_reservations_max: int = Field(200_000, ge=1000)
    cache_catch_up_events_max: int = Field(20_000, ge=1)
    cache_refresh_ms: int = Field(100, ge=5, le=3_600_000)
    wait_for_position_ms_max: int = Field(5000, ge=0)

    # Python's GIL hand-off between the event loop and the writer thread (see ledger serve).
    gil_switch_interval_ms: float = Field(0.5, gt=0, le=5)

    # The database.
    db_pool_size: int = Field(8, ge=2)
    db_lock_timeout_s: int = Field(30, ge=1, le=3600)
    # The longest the writer waits for PostgreSQL to answer one of its statements, its lock waits
    # included (ledger/storage/pg_sessions.py): past it the statement is cancelled, its session
    # dropped and the batch's callers answered. A stuck server must not freeze the writer. Unset:
    # two lock waits (a batch may wait for the writers' lock, then for the log's) and a margin.
    db_writer_answer_wait_s: int | None = Field(
        None,
        ge=2,
        le=86_400,
        description="the writer's wait for an answer of PostgreSQL; unset: 2 lock waits + 30 s",
    )
    # PostgreSQL's deadlock_timeout on the ledger's sessions: how soon the rebuild's swap (or a
    # migration) that finds autovacuum holding a table has it cancelled (ledger/storage/pg_sessions.py).
    db_deadlock_timeout_ms: int = Field(
        100, ge=0, le=60_000, description="deadlock_timeout of its sessions (PostgreSQL); 0: the server's"
    )
    # How long a start (ledger serve, ledger migrate) waits for another's schema migration to end
    # (PostgreSQL; on SQLite a migration is one write transaction, waited for as any write is).
    migration_wait_s: int = Field(
        600, ge=1, le=86_400, description="wait for another instance's schema migration (PostgreSQL)"
    )

    # `ledger rebuild` and `ledger verify` (ledger/rebuild): log entries read and replayed at a time
    # (memory holds one such page, and on PostgreSQL `rebuild_pages_ahead_max` more on their way to
    # the database). On PostgreSQL the rebuild fills shadow tables while writes go on, catches up,
    # and takes the writers' lock only to replay the last entries and swap the tables in: it does
    # so once the gap is at most `rebuild_swap_entries_max` entries (or after the rounds max), and
    # waits at most `rebuild_swap_lock_wait_ms` for readers of the tables to finish before it lets
    # the writers go again and tries later (up to `rebuild_swap_attempts_max` times).
    rebuild_batch_entries: int = Field(10_000, ge=1, le=1_000_000)
    rebuild_pages_ahead_max: int = Field(2, ge=1, le=16)
    rebuild_swap_entries_max: int = Field(2000, ge=1)
    rebuild_catch_up_rounds_max: int = Field(20, ge=1)
    rebuild_swap_lock_wait_ms: int = Field(500, ge=1, le=60_000)
    rebuild_swap_attempts_max: int = Field(10, ge=1)
    # The shadow tables' indexes are built after they are filled, this many at once, each with
    # this much memory for its sort (PostgreSQL's maintenance_work_mem, for that build only).
    rebuild_index_builds_at_once: int = Field(2, ge=1, le=16)
    rebuild_index_memory_mb: int = Field(256, ge=1, le=64 * 1024)
    # The fill's replay spread over this many processes, by store (ledger/rebuild/parts.py): each
    # holds its stores' levels and reservations, and uses about a core while it replays.
    rebuild_processes: int = Field(2, ge=1, le=64)

    # `ledger backup` of a SQLite ledger (ledger/backup.py): pages copied per step of SQLite's online
    # backup, and a pause after each step that leaves the disk to the service.
    backup_step_pages: int = Field(
        1024, ge=1, le=2**31 - 1, description="pages ledger backup copies per step"
    )
    backup_step_pause_ms: int = Field(0, ge=0, le=60_000, description="pause after each step of a backup")

    # Adapters (adapters/README.md): the outbound workers and the inbound webhook receiver.
    adapters_http_host: str = Field("127.0.0.1", description="where `ledger adapters run` receives webhooks")
    adapters_http_port: int = Field(8010, ge=0, le=PORT_MAX)
    # The receiver's connections and requests at once (past it uvicorn answers 503, and the sender
    # retries), each request's work on a thread of its own; its connections' idle, header and body
    # deadlines and header size are the LEDGER_HTTP_* ones above (adapters/webhook_server.py).
    adapters_http_connections_max: int = Field(
        256, ge=1, description="connections and requests the webhook receiver serves at once"
    )
    adapters_read_events_max: int = Field(5000, ge=1, description="log entries one push cycle reads")
    adapters_retries_max: int = Field(5, ge=1, description="attempts of one item before it is parked")
    adapters_request_retries_max: int = Field(5, ge=1, description="attempts of one request per cycle")
    adapters_backoff_initial_ms: int = Field(500, ge=1)
    adapters_backoff_max_ms: int = Field(30_000, ge=1)
    adapters_poll_interval_ms: int = Field(1000, ge=10, description="idle wait between push cycles")
    adapters_mappings_refresh_s: float = Field(10.0, ge=0, description="how often mapping edits are re-read")
    adapters_inbox_batch_max: int = Field(100, ge=1, description="webhook deliveries processed per round")
    # Webhooks in: a delivery is stored before it is answered, in the database if it takes it within
    # the wait, else in the spool; both well within the senders' deadline (MoySklad: 1500 ms).
    adapters_webhook_deadline_ms: int = Field(
        1500, ge=100, description="the senders' answer deadline; the database wait must stay below it"
    )
    adapters_webhook_database_wait_ms: int = Field(
        500, ge=10, description="how long a delivery waits for the database before it goes to the spool"
    )
    adapters_webhook_database_attempts_max: int = Field(
        8, ge=1, description="deliveries stored in the database at once; more go straight to the spool"
    )
    adapters_spool_dir: str | None = Field(
        None, description="the webhook spool; unset: beside the SQLite file, else under $XDG_STATE_HOME"
    )
    adapters_spool_deliveries_max: int = Field(
        10_000, ge=1, description="deliveries the spool holds; past it a delivery is answered 503"
    )
    adapters_inbox_settle_ms: int = Field(
        1500, ge=0, description="a delivery is processed this long after it arrived: earlier ones are stored"
    )
    # Reconciliation (`ledger reconcile --apply RUN`): a reviewed report past these needs --force.
    adapters_reconcile_line_units_max: int = Field(
        100, ge=1, description="a line that moves more units than this needs --force"
    )
    adapters_reconcile_changed_share_max: float = Field(
        0.2, gt=0, le=1, description="changing more than this share of the stores' SKUs needs --force"
    )
    adapters_reconcile_share_min_skus: int = Field(
        20, ge=1, description="the share limit applies to stores holding at least this many SKUs"
    )

    # 1C-Bitrix (REST through an inbound webhook URL).
    bitrix_webhook_url: str | None = Field(None, description="https://<site>/rest/<user>/<token>/")
    bitrix_push: str = Field(
        "product",
        pattern=r"^(product|documents|product,documents|documents,product)$",
        description="product: catalog.product.update; documents: inventory documents",
    )
    bitrix_batch_commands_max: int = Field(50, ge=1, le=50)
    bitrix_burst_requests_max: int = Field(50, ge=1, description="leaky bucket size X (Enterprise: 250)")
    bitrix_requests_per_s: float = Field(2.0, gt=0, description="leaky bucket drain Y (Enterprise: 5)")
    bitrix_timeout_s: float = Field(10.0, gt=0)
    bitrix_document_currency: str = "RUB"
    bitrix_responsible_id: int = Field(1, ge=1)
    bitrix_store_amount: str = Field("available", pattern=r"^(available|on_hand)$")
    # A channel (CONTRACT §6) whose figure the site may sell: pushed instead of `available`.
    bitrix_channel: str | None = Field(
        None, pattern=ID_REGEX, description="push this channel's sellable, e.g. online"
    )
    bitrix_receipt_supplier: str = Field(
        "contractor:1",
        pattern=r"^(contractor|company|contact):[1-9][0-9]*$",
        description="supplier of receipt (A) documents: contractor:<id> (the document's contractorId), "
        "or company:<id> / contact:<id> (a CRM vendor, catalog.documentcontractor.add)",
    )

    # MoySklad (JSON API 1.2).
    moysklad_base_url: str = "https://api.moysklad.ru/api/remap/1.2"
    moysklad_token: str | None = Field(None, description="Bearer token; unset: MoySklad is off")
    moysklad_requests_per_window: int = Field(45, ge=1)
    moysklad_window_s: float = Field(3.0, gt=0)
    moysklad_parallel_max: int = Field(5, ge=1, le=5)
    moysklad_timeout_s: float = Field(10.0, gt=0)
    moysklad_organization_id: str | None = Field(None, description="the seller (organization) of orders")
    moysklad_agent_id: str | None = Field(None, description="the counterparty of customer orders")
    moysklad_webhook_secret: str | None = Field(None, description="last path segment of the webhook URL")
    moysklad_catch_up_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="how often demands, their deletions and orders' states are read back by time (0: never)",
    )

    # An Inflow-style WMS (REST with X-API-Key).
    wms_base_url: str | None = Field(None, description="e.g. https://wms.example/; unset: the WMS is off")
    wms_api_key: str | None = None
    wms_requests_per_s: float = Field(10.0, gt=0)
    wms_timeout_s: float = Field(10.0, gt=0)
    wms_poll_interval_s: float = Field(30.0, gt=0, description="how often open picking orders are polled")
    wms_poll_orders_max: int = Field(200, ge=1)
    # Reconciliation reads GET /api/v1/stock page by page to the end (adapters/wms_stock.py).
    wms_stock_per_page: int = Field(500, ge=1, le=10_000, description="rows asked per stock page")
    wms_stock_pages_max: int = Field(
        2000, ge=1, description="pages one stock read follows; a longer report is refused, not cut"
    )
    wms_webhook_secret: str | None = Field(None, description="last path segment of the status webhook URL")
    # Statuses may come signed instead, to POST /wms/status: an HMAC-SHA256 of the raw body in a
    # header (adapters/signatures.py), `X-Signature: sha256=<hex>` by default.
    wms_webhook_signing_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of signed status webhooks; unset: none are accepted"
    )
    wms_webhook_signature_header: str = Field("X-Signature", pattern=r"^[A-Za-z0-9-]{1,64}$")
    wms_webhook_signature_prefix: str = Field("sha256=", max_length=32, description="before the digest")
    wms_webhook_signature_encoding: Literal["hex", "base64"] = "hex"

    @field_validator("bitrix_webhook_url", "moysklad_base_url", "wms_base_url")
    @classmethod
    def _target_url_is_http(cls, url: str | None) -> str | None:
        """A push target's address: an absolute http(s) URL with a host, refused at start rather
        than at the first push (a traceback from the adapters' run)."""
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not the value: a webhook URL holds its secret (CONTRACT §5).
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @field_validator("kafka_topic", "kafka_results_topic", "kafka_dlq_topic", "kafka_levels_topic")
    @classmethod
    def _kafka_topic_name(cls, topic: str) -> str:
        """A name Kafka takes for a topic; the Kafka client refused any other only when it used it
        (a traceback logged at every retry, for ever) rather than at start."""
        if not _KAFKA_TOPIC.fullmatch(topic) or topic in (".", ".."):
            raise ValueError(
                f"{topic!r} is no Kafka topic name: 1 to {KAFKA_TOPIC_CHARS_MAX} ASCII letters, digits, "
                "'.', '_' or '-', and not . or .."
            )
        return topic

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts_name_one(cls, hosts: str | None) -> str | None:
        """Set, it names at least one host (or *): set empty (a compose file's `${VAR:-}`), every
        request but the probes was refused 400 `invalid-host`, and /readyz said ready."""
        if hosts is not None and not any(name.strip() for name in hosts.split(",")):
            raise ValueError("names no host: list the names clients reach the service by, or *, or unset it")
        # A name listed with its port (as the Host header shows it), or an IPv6 address without its
        # brackets, never matched a Host: every request but the probes was refused 400, as above.
        for name in (name.strip() for name in (hosts or "").split(",")):
            if (
                name
                and name != ANY_HOST
                and host_name(name.encode("latin-1", "replace")) != name.lower().rstrip(".")
            ):
                raise ValueError(
                    f"{name!r} is not a host name alone: list names or addresses with no port (a Host's "
                    "port is not compared), an IPv6 address in brackets ([::1])"
                )
        return hosts

    @field_validator("units")
    @classmethod
    def _units_are_global_or_one_skus(cls, units: dict[str, int]) -> dict[str, int]:
        """A key is a unit of every SKU (`box12`) or of one (`SKU-1/box`: a SKU id, one `/`, a
        unit). A unit of every SKU with `/` in it could never be used (a line's `uom` with `/`
        is looked up as one SKU's only), so it is refused at start rather than ignored."""
        for key in units:
            sku, slash, unit = key.partition("/")
            if not key or (slash and (not _UNIT_SKU.fullmatch(sku) or not unit or "/" in unit)):
                raise ValueError(
                    f"{key!r} is neither a unit of every SKU (no '/': box12) nor one SKU's unit "
                    "(SKU-1/box: a SKU id, '/', the unit)"
                )
        return units

    @field_validator("database_url")
    @classmethod
    def _sqlite_url_has_its_three_slashes(cls, url: str) -> str:
        """`sqlite:ledger.db` or `sqlite://ledger.db` would name another file than meant (the first
        letter cut off, or the default file): refused, not guessed."""
        if url.lower().startswith("sqlite:") and not url.lower().startswith("sqlite:///"):
            raise ValueError(
                "a SQLite database is sqlite:///relative/path.db or sqlite:////absolute/path.db "
                f"(three slashes after sqlite:, then the path), not {url!r}"
            )
        if url.lower().startswith("sqlite:///") and (":memory:" in url or "?" in url):
            # A ledger in memory is gone with its process (an import into it 'succeeds'), and the
            # URL's options are not read: both would report success for a ledger that is not there.
            raise ValueError(
                "a SQLite ledger is a file: sqlite:///path/to/ledger.db, without :memory: or ?options, "
                f"not {url!r}"
            )
        return url

    @model_validator(mode="after")
    def _peers_share_postgres(self) -> Settings:
        if self.writer_peer_address is not None:
            port = int(self.writer_peer_address.rpartition(":")[2])
            if not 0 < port < 65536:
                raise ValueError(f"LEDGER_WRITER_PEER_ADDRESS: port {port} is not 1..65535")
            if not self.database_url.startswith(("postgresql://", "postgres://")):
                raise ValueError("LEDGER_WRITER_PEER_ADDRESS needs a PostgreSQL LEDGER_DATABASE_URL")
            secret = self.writer_peer_secret.get_secret_value() if self.writer_peer_secret else ""
            if len(secret) < PEER_SECRET_CHARS_MIN:
                raise ValueError(
                    "LEDGER_WRITER_PEER_ADDRESS needs LEDGER_WRITER_PEER_SECRET, the same on every "
                    f"instance, of at least {PEER_SECRET_CHARS_MIN} characters (say: openssl rand -hex 32)"
                )
            if not self.writer_process:
                raise ValueError(
                    "LEDGER_WRITER_PEER_ADDRESS needs the writer in its own process (LEDGER_WRITER_PROCESS)"
                )
        return self

    @property
    def writer_answer_wait_s(self) -> float:
        if self.db_writer_answer_wait_s is not None:
            return float(self.db_writer_answer_wait_s)
        return 2.0 * self.db_lock_timeout_s + WRITER_ANSWER_MARGIN_S

    @model_validator(mode="after")
    def _writer_waits_out_its_locks(self) -> Settings:
        wait_s = self.db_writer_answer_wait_s
        postgresql = urlsplit(self.database_url).scheme.lower() in ("postgresql", "postgres")
        if wait_s is not None and wait_s <= 2 * self.db_lock_timeout_s and postgresql:
            raise ValueError(
                f"LEDGER_DB_WRITER_ANSWER_WAIT_S ({wait_s}) must be more than twice LEDGER_DB_LOCK_TIMEOUT_S "
                f"({self.db_lock_timeout_s}): a batch may wait that long for its two locks before it starts"
            )
        return self

    @model_validator(mode="after")
    def _kafka_sasl_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"LEDGER_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "LEDGER_KAFKA_SASL_MECHANISM, LEDGER_KAFKA_SASL_USERNAME and LEDGER_KAFKA_SASL_PASSWORD"
            )
        return self

    @model_validator(mode="after")
    def _heartbeats_within_the_session(self) -> Settings:
        """The Kafka client refuses to build a consumer otherwise: `ledger consume` and a serve with
        Kafka logged that traceback again at every retry, for ever, instead of refusing to start."""
        if self.kafka_heartbeat_interval_ms >= self.kafka_session_timeout_ms:
            raise ValueError(
                f"LEDGER_KAFKA_HEARTBEAT_INTERVAL_MS ({self.kafka_heartbeat_interval_ms}) must be less than "
                f"LEDGER_KAFKA_SESSION_TIMEOUT_MS ({self.kafka_session_timeout_ms}): a member that sends "
                "no heartbeat within its session is dropped from the group"
            )
        return self

    @model_validator(mode="after")
    def _kafka_ca_file_readable(self) -> Settings:
        """The broker's CA certificates, read as the clients read them, when TLS is on: a missing or
        unreadable file was found only when a client connected, inside the intake's retries, not
        at start."""
        if self.kafka_ssl_cafile is not None and self.kafka_security_protocol.endswith("SSL"):
            try:
                ssl.create_default_context().load_verify_locations(self.kafka_ssl_cafile)
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                reason = getattr(error, "strerror", None) or str(error)
                raise ValueError(
                    f"LEDGER_KAFKA_SSL_CAFILE: {self.kafka_ssl_cafile} cannot be read as PEM CA "
                    f"certificates: {reason}"
                ) from None
        return self

    @model_validator(mode="after")
    def _producer_buffer_holds_a_request(self) -> Settings:
        if self.kafka_produce_buffer_bytes_max < self.kafka_produce_request_bytes_max:
            raise ValueError(
                f"LEDGER_KAFKA_PRODUCE_BUFFER_BYTES_MAX ({self.kafka_produce_buffer_bytes_max}) must "
                "hold one request (LEDGER_KAFKA_PRODUCE_REQUEST_BYTES_MAX, "
                f"{self.kafka_produce_request_bytes_max})"
            )
        return self

    @model_validator(mode="after")
    def _dead_letters_fit(self) -> Settings:
        dead_letter_bytes_max = (
            self.kafka_dlq_value_bytes_max
            + self.kafka_dlq_key_bytes_max
            + self.kafka_dlq_headers_bytes_max
            + KAFKA_RECORD_FRAMING_BYTES_MAX
        )
        if dead_letter_bytes_max > self.kafka_produce_request_bytes_max:
            raise ValueError(
                "LEDGER_KAFKA_DLQ_VALUE_BYTES_MAX + _KEY_BYTES_MAX + _HEADERS_BYTES_MAX (+1 KiB) must fit in "
                f"LEDGER_KAFKA_PRODUCE_REQUEST_BYTES_MAX: {dead_letter_bytes_max} > "
                f"{self.kafka_produce_request_bytes_max}"
            )
        return self
