"""The collector's side of OpenTelemetry export (``--otlp-endpoint``): a stored request's events as log records.

The ingest path hands over the job it just stored, encoded as the writer got it
(bytes: no copy, nothing to build), and goes on; the exporter's thread decodes
it into log records (:mod:`ox_telemetry.otlp`) only when it is about to send.
"""

from __future__ import annotations

from functools import partial

import msgspec

from .. import otlp
from .config import Config
from .metrics import Metrics
from .storage import WriteJob
from .storage.schema import CLIENT_NAMES, DAEMON_NAMES
from .writer_process import Encoded

_JOB = msgspec.msgpack.Decoder(WriteJob)


def records(job: Encoded) -> list[otlp.Record]:
    """The log records of every event in ``job`` (client events first)."""
    decoded = _JOB.decode(job.data)
    out = [otlp.client_record(dict(zip(CLIENT_NAMES, row, strict=True))) for row in decoded.client.rows()]
    for values in decoded.daemon.rows():
        row = dict(zip(DAEMON_NAMES, values, strict=True))
        out.append(otlp.daemon_record(
            row["event"], row["props"], uuid=row["uuid"], client_id=row["client_id"], tslocal=row["tslocal"],
            time_us=None if row["time_flag"] == "missing" else row["event_time"], observed_us=row["received_at"],
        ))
    return out


class Export:
    """The exporter of one collector, and its counters in ``/metrics``."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        assert config.otlp_endpoint is not None
        self.exporter = otlp.Exporter(config.otlp_endpoint, dict(config.otlp_headers), config.otlp_service_name,
                                      user_agent="ox-telemetry-collector")
        for name, help_text in (("exported", "Events exported to the OTLP endpoint."),
                                ("dropped", "Events not exported: buffer full, refused, or retries spent."),
                                ("retries", "OTLP export requests retried.")):
            metrics.counter(f"ox_collector_otlp_{name}_total", help_text,
                            partial(lambda key: self.exporter.counters()[key], name))
        metrics.gauge("ox_collector_otlp_queued_events", "Events waiting to be exported.",
                      lambda: self.exporter.queued)

    def stored(self, job: Encoded) -> None:
        """``job`` was committed: export its events (a copy of what was stored; never waits)."""
        self.exporter.offer(job.rows, partial(records, job))
