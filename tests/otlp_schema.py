"""Reading what an OTLP sink received with OpenTelemetry's own schema (the ``opentelemetry-proto`` package)."""

from __future__ import annotations

import gzip

from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from loopback import Endpoint


def decoded(sink: Endpoint) -> list[ExportLogsServiceRequest]:
    """Every request the sink took, parsed by OpenTelemetry's schema (which refuses any field it lacks)."""
    out = []
    for req in list(sink.requests):
        body = gzip.decompress(req.raw) if req.headers.get("content-encoding") == "gzip" else req.raw
        out.append(Parse(body, ExportLogsServiceRequest()))
    return out
