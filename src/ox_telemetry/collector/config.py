"""What ``ox-telemetry serve`` was told: store, keys, tokens and limits."""

from __future__ import annotations

from dataclasses import dataclass, field


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
