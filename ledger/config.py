"""Every setting and limit of the service, read from LEDGER_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    database_url: str = Field(
        "sqlite:///ledger.db", description="sqlite:///file or postgresql://user:pass@host:port/db"
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    http_workers: int = Field(1, ge=1, le=64, description="worker processes, each a full instance")
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset: no Kafka")
    kafka_topic: str = "stock.events"
    kafka_group: str = "stock-ledger"

    # Input limits (CONTRACT §1 and §3).
    lines_per_event_max: int = Field(1000, ge=1, le=1000)
    events_per_request_max: int = Field(1000, ge=1, le=1000)
    skus_per_lookup_max: int = Field(1000, ge=1, le=1000)
    body_bytes_max: int = Field(16 * 1024 * 1024, ge=1024)
    history_page_max: int = Field(1000, ge=1, le=1000)
    history_page_default: int = Field(100, ge=1, le=1000)
    units: dict[str, int] = Field(default_factory=dict, description='JSON: {"box12": 12, "SKU-1/box": 6}')

    # The group-commit writer. `ledger serve` runs it in a process of its own and tells its HTTP
    # workers where: LEDGER_WRITER_SOCKET. Unset elsewhere: the writer is a thread of the process.
    writer_process: bool = Field(True, description="ledger serve: run the writer in its own process")
    writer_socket: str | None = None
    writer_batch_events_max: int = Field(2000, ge=1)
    writer_retries_max: int = Field(3, ge=0)
    writer_queue_submissions_max: int = Field(20000, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)

    # Reservation expiry.
    expiry_interval_ms: int = Field(500, ge=10)
    expiry_batch_max: int = Field(500, ge=1)

    # This instance's in-memory state and how it keeps up with other instances' writes.
    cache_levels_max: int = Field(1_000_000, ge=1000)
    cache_reservations_max: int = Field(200_000, ge=1000)
    cache_catch_up_events_max: int = Field(20_000, ge=1)
    cache_refresh_ms: int = Field(100, ge=5)
    wait_for_position_ms_max: int = Field(5000, ge=0)

    # Python's GIL hand-off between the event loop and the writer thread (see ledger serve).
    gil_switch_interval_ms: float = Field(0.5, gt=0, le=5)

    # The database.
    db_pool_size: int = Field(8, ge=2)
    db_lock_timeout_s: int = Field(30, ge=1)
