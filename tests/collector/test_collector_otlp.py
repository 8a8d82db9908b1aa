"""OpenTelemetry export (``--otlp-endpoint``): what a real OTLP/HTTP endpoint receives, read with OpenTelemetry's own
protobuf definitions, the OTLP retry rules, and ingest that never waits for the export."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import Server, batch, event, request, start_process

from loopback import Endpoint, wait_until
from ox_telemetry import otlp

pytest.importorskip("opentelemetry.proto", reason="the OTLP schema test needs opentelemetry-proto (dev extra)")
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otlp_schema import decoded


@pytest.fixture
def sink() -> Iterator[Endpoint]:
    """An OTLP/HTTP endpoint on loopback that records every POST."""
    server = Endpoint()
    yield server
    server.close()


def log_records(sink: Endpoint, answered: int = 200) -> list[LogRecord]:
    """The log records of the requests answered ``answered``."""
    return [record for req, message in zip(list(sink.requests), decoded(sink), strict=True) if req.status == answered
            for resource in message.resource_logs for scope in resource.scope_logs for record in scope.log_records]


def attributes(record: LogRecord) -> dict[str, Any]:
    def plain(value: AnyValue) -> Any:
        kind = value.WhichOneof("value")
        return getattr(value, kind) if kind else None

    return {kv.key: plain(kv.value) for kv in record.attributes}


def metric(server: Server, name: str) -> float:
    text = server.request("GET", "/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_every_stored_event_is_exported_once_as_the_otlp_schema_reads_it(
        serve: Callable[..., Server], sink: Endpoint) -> None:
    server = serve(otlp_endpoint=sink.base_url + "/v1/logs", otlp_headers=(("Authorization", "Bearer otlp-key"),),
                   otlp_service_name="my-cli")
    sent_at = time.time()
    client_events = [
        event(command="sync", metadata={"flag": "force"}, agent_type="claude-code", duration_ms=1534),
        event(type="guidance_fetch", success=False, error_code="timeout", duration_ms=0),
        event(type="session_start", command=""),
    ]
    client = batch(*client_events, cli_version="1.4.2", os="darwin", arch="arm64")
    daemon = {"clientid": "c-1", "events": [
        {"uuid": str(uuid.uuid4()), "ts": int(sent_at * 1000), "tslocal": "2026-12-04T10:00:00+01:00",
         "event": "app:startup", "props": {"app_version": "0.3", "count": 3, "ok": True, "nested": {"a": [1]}}},
        {"uuid": str(uuid.uuid4()), "event": "daemon:tick"},
    ]}
    assert server.post("/api/v1/telemetry", client).status == 200
    assert server.post("/tevents", daemon).status == 200
    assert wait_until(lambda: len(log_records(sink)) >= 5, 20), sink.requests
    # A redelivery of what was stored is no new event: it is not exported again.
    assert server.post("/api/v1/telemetry", client).json()["duplicates"] == 3
    assert server.post("/tevents", daemon).json()["duplicates"] == 2
    assert wait_until(lambda: metric(server, "ox_collector_otlp_exported_total") == 5, 10)

    records = log_records(sink)
    assert len(records) == 5
    first = sink.requests[0]
    assert first.path == "/v1/logs"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == "Bearer otlp-key"
    assert first.headers["content-encoding"] == "gzip"
    message = decoded(sink)[0]
    resource = {kv.key: kv.value.string_value for kv in message.resource_logs[0].resource.attributes}
    assert resource == {"service.name": "my-cli"}
    assert message.resource_logs[0].scope_logs[0].scope.name == "ox-telemetry"

    by_name = {record.body.string_value: record for record in records}
    assert set(by_name) == {"command_complete", "guidance_fetch", "session_start", "app:startup", "daemon:tick"}
    sync = by_name["command_complete"]
    assert attributes(sync) == {
        "event.name": "command_complete", "session.id": "sess-test", "ox.command": "sync",
        "ox.duration_ms": 1534, "ox.success": True, "ox.agent_type": "claude-code",
        "ox.event_id": client_events[0]["event_id"], "ox.metadata.flag": "force",
        "service.version": "1.4.2", "os.type": "darwin", "host.arch": "arm64",
    }
    failed = attributes(by_name["guidance_fetch"])
    assert failed["ox.success"] is False and failed["ox.error_code"] == "timeout"
    assert "ox.duration_ms" not in failed  # unset fields are left out, as on the wire
    # Times: the event's (corrected) time and the receipt, in nanoseconds.
    assert abs(sync.time_unix_nano / 1e9 - sent_at) < 60
    assert sync.observed_time_unix_nano >= sync.time_unix_nano - 60 * 10**9

    startup = attributes(by_name["app:startup"])
    assert startup == {
        "event.name": "app:startup", "ox.props.app_version": "0.3", "ox.props.count": 3, "ox.props.ok": True,
        "ox.props.nested": '{"a":[1]}', "ox.uuid": daemon["events"][0]["uuid"], "ox.client_id": "c-1",
        "ox.tslocal": "2026-12-04T10:00:00+01:00",
    }
    assert by_name["app:startup"].time_unix_nano == daemon["events"][0]["ts"] * 10**6
    assert by_name["daemon:tick"].time_unix_nano == 0  # sent without a time: unknown, not the receipt
    assert by_name["daemon:tick"].observed_time_unix_nano > 0


def test_retryable_status_is_retried_no_sooner_than_retry_after(serve: Callable[..., Server], sink: Endpoint) -> None:
    sink.status, sink.headers = 503, {"Retry-After": "1"}
    server = serve(otlp_endpoint=sink.base_url + "/v1/logs")
    assert server.post("/api/v1/telemetry", batch(event(), event())).status == 200
    assert wait_until(lambda: len(sink.requests) >= 1, 10)
    sink.status, sink.headers = 200, {}
    assert wait_until(lambda: metric(server, "ox_collector_otlp_exported_total") == 2, 20)
    refused, delivered = sink.requests[0], sink.requests[-1]
    assert refused.status == 503 and delivered.status == 200
    assert delivered.at - refused.at >= 0.95  # Retry-After: 1 honoured
    assert metric(server, "ox_collector_otlp_retries_total") >= 1
    assert metric(server, "ox_collector_otlp_dropped_total") == 0


@pytest.mark.parametrize("status", [400, 500])
def test_other_statuses_drop_the_batch_and_count_it(serve: Callable[..., Server], sink: Endpoint,
                                                    status: int) -> None:
    # OTLP retries only 429, 502, 503 and 504: a 500, which the project's own senders retry, is final here.
    sink.status = status
    server = serve(otlp_endpoint=sink.base_url + "/v1/logs")
    assert server.post("/api/v1/telemetry", batch(event(), event(), event())).status == 200
    assert wait_until(lambda: metric(server, "ox_collector_otlp_dropped_total") == 3, 10)
    assert len(sink.requests) == 1  # never retried
    assert metric(server, "ox_collector_otlp_exported_total") == 0
    assert metric(server, "ox_collector_otlp_retries_total") == 0
    # The events were stored all the same.
    assert server.count() == 3


def test_a_blackholed_otlp_endpoint_never_makes_a_client_wait(tmp_path: Path) -> None:
    # The endpoint accepts connections and never answers (nothing ever accepts them: the kernel's backlog does).
    hole = socket.create_server(("127.0.0.1", 0), backlog=1024)
    proc = start_process("--db", f"sqlite://{tmp_path}/c.sqlite3", "--rate", "0", "--key-rate", "0",
                         "--otlp-endpoint", f"http://127.0.0.1:{hole.getsockname()[1]}/v1/logs")
    try:
        def post(_: int) -> tuple[int, float]:
            started = time.monotonic()
            body = batch(*(event() for _ in range(20)))
            reply = request(proc.port, "POST", "/api/v1/telemetry", json.dumps(body).encode(), timeout=10)
            return reply.status, time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(post, range(300)))
        elapsed = time.monotonic() - started
        assert all(status == 200 for status, _ in results)
        # Every answer came long before the exporter's own request could even time out (10 s).
        assert max(seconds for _, seconds in results) < 3, sorted(seconds for _, seconds in results)[-5:]
        assert elapsed < 15
        metrics = proc.request("GET", "/metrics").body.decode()
        assert "ox_collector_otlp_exported_total 0" in metrics
        # A stop is not held up by the export request that hangs.
        stopped = time.monotonic()
        proc.stop()
        assert time.monotonic() - stopped < 10
    finally:
        proc.kill_all()
        hole.close()


def test_the_buffer_is_bounded_and_what_overflows_is_counted(sink: Endpoint) -> None:
    sink.hang = True  # the first export request never gets its answer
    exporter = otlp.Exporter(sink.base_url + "/v1/logs", max_events=100, batch=10, timeout=30)
    exporter.start()
    made: list[int] = []

    def recipe() -> list[otlp.Record]:
        made.append(1)
        return [otlp.daemon_record("e", {}, uuid=None, client_id=None, tslocal=None, time_us=1, observed_us=1)] * 10

    try:
        assert exporter.offer(10, recipe)
        assert wait_until(lambda: len(sink.requests) == 1, 10)  # the thread is stuck in that request
        started = time.monotonic()
        taken = [exporter.offer(10, recipe) for _ in range(15)]
        assert time.monotonic() - started < 0.5  # offering never waits on the endpoint
        assert taken == [True] * 10 + [False] * 5
        assert exporter.counters() == {"exported": 0, "dropped": 50, "retries": 0, "queued": 100}
        assert len(made) == 1  # records of events still buffered (or dropped) are never built
    finally:
        exporter.close(grace=0.1)
    assert exporter.counters()["dropped"] == 150 and exporter.queued == 0


def test_awkward_values_still_make_a_request_the_schema_reads() -> None:
    props = {"quote": 'a "b" \\ c\n', "lone": "\ud800x", "big": 2**70, "small": -(2**63), "nan": float("nan"),
             "pi": 3.25, "none": None, "list": [1, "x"], "é": "ü"}
    body = otlp.request_body([otlp.daemon_record("e\u2028", props, uuid="u", client_id=None, tslocal=None,
                                                 time_us=None, observed_us=5)], "svc")
    record = Parse(body, ExportLogsServiceRequest()).resource_logs[0].scope_logs[0].log_records[0]
    got = attributes(record)
    assert record.body.string_value == "e\u2028" and record.observed_time_unix_nano == 5000
    assert got["ox.props.quote"] == 'a "b" \\ c\n' and got["ox.props.lone"] == "?x"
    assert got["ox.props.big"] == str(2**70) and got["ox.props.small"] == -(2**63)
    assert got["ox.props.nan"] == "nan" and got["ox.props.pi"] == 3.25
    assert got["ox.props.none"] == "null" and got["ox.props.list"] == '[1,"x"]' and got["ox.props.é"] == "ü"
