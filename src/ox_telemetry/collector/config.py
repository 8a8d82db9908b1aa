"""What ``ox-telemetry serve`` was told: store, keys, tokens and limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..otlp import DEFAULT_SERVICE_NAME


@dataclass(frozen=True)
class Config:
    """Collector settings. A rate of 0 turns that bucket off."""

    db_url: str
    write_keys: frozenset[str] = field(default_factory=frozenset)
    read_token: str | None = None
    address_rate: float = 50.0  # requests a second per client address
    address_burst: float = 200.0
    key_rate: float = 500.0  # requests a second per write key
    key_burst: float = 2000.0
    max_pending: int = 200_000  # events queued for the writer before 503
    daemon_interval: str | None = None  # sent to daemons as X-SageOx-Interval
    allow_origins: frozenset[str] = field(default_factory=frozenset)  # Origin values allowed besides our own
    loopback: bool = True  # bound to a loopback address: a Host must name loopback or one of server_names
    server_names: frozenset[str] = field(default_factory=frozenset)
    max_inflight_bytes: int = 256 * 1024 * 1024  # request bytes held at once, all requests together, before 503
    head_timeout: float = 10.0  # seconds for a request head; also a body's grace before its speed floor
    otlp_endpoint: str | None = None  # export every stored event there as an OTLP log record (collector/export.py)
    otlp_headers: tuple[tuple[str, str], ...] = ()  # sent with each export request, e.g. Authorization
    otlp_service_name: str = DEFAULT_SERVICE_NAME  # the exported resource's service.name
    retain_days: float | None = None  # raw events received longer ago are deleted (None: kept for ever)
    retention_interval: float = 3600.0  # seconds between retention passes (the first runs at start)
