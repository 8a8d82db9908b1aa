"""The daemon's timings and limits, read once at start.

Production values are the issue's; tests shorten them through the
environment:

``OX_TELEMETRY_DAEMON_INTERVAL``  send interval in seconds (default 60; at
                                  least 0.05 when set, so tests can run fast);
``OX_TELEMETRY_DAEMON_TUNING``    ``key=value`` pairs separated by commas for
                                  any other field below, e.g.
                                  ``cooldown=0.2,base=0.05,timeout=1,idle=2``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .. import settings as env

#: ``X-SageOx-Interval`` is clamped to this range.
MIN_SERVER_INTERVAL = 10.0
MAX_SERVER_INTERVAL = 24 * 3600.0
#: A test's interval may go this low, never lower (the loop must not spin).
MIN_ENV_INTERVAL = 0.05


@dataclass
class Settings:
    """Every tunable of one daemon run."""

    interval: float = 60.0  # regular send interval
    early_count: int = 50  # this many waiting events trigger an early send ...
    cooldown: float = 5.0  # ... at most once per this many seconds
    batch: int = 500  # events per request (also the in-memory window)
    batch_bytes: int = 512 * 1024  # spool bytes per request, before compression
    base: float = 1.0  # first retry delay ceiling (full jitter)
    cap: float = 600.0  # largest retry delay
    timeout: float = 10.0  # one HTTP request
    spool_bytes: int = 10 * 1024 * 1024  # the disk spool's bound
    segment_bytes: int = 1024 * 1024  # one spool file's size before the next starts
    max_line: int = 1024 * 1024  # longest IPC line accepted
    max_connections: int = 100  # then new connections wait in the listen backlog
    idle: float = 5.0  # an idle connection is closed after this long ...
    busy_idle: float = 0.5  # ... or after this long while new connections wait for room
    stop_grace: float = 2.0  # on stop, time left for a last send

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults with the environment's overrides applied (malformed values are ignored)."""
        settings = cls()
        types = {f.name: f.type for f in fields(cls)}
        for key, value in env.tuning("OX_TELEMETRY_DAEMON_TUNING", types).items():
            setattr(settings, key, int(value) if types[key] in (int, "int") else value)
        interval = env.number("OX_TELEMETRY_DAEMON_INTERVAL")
        if interval is not None:
            settings.interval = max(MIN_ENV_INTERVAL, interval)
        return settings
