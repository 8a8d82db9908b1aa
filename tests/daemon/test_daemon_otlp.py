"""The daemon's OpenTelemetry export (``SAGEOX_TELEMETRY_OTLP_ENDPOINT``): every event it receives, scrubbed, as
OTLP log records that OpenTelemetry's own schema reads; nothing while the user has opted out."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import DaemonProcess, connect, status, telemetry_line

from loopback import Endpoint, wait_until

pytest.importorskip("opentelemetry.proto", reason="the OTLP schema test needs opentelemetry-proto (dev extra)")
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otlp_schema import decoded


@pytest.fixture
def sink(daemon_env: Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    """An OTLP/HTTP endpoint on loopback, named to the daemon by ``SAGEOX_TELEMETRY_OTLP_ENDPOINT``."""
    server = Endpoint()
    monkeypatch.setenv("SAGEOX_TELEMETRY_OTLP_ENDPOINT", server.base_url + "/v1/logs")
    yield server
    server.close()


def records(sink: Endpoint) -> list[LogRecord]:
    out = []
    for message in decoded(sink):
        assert [kv.value.string_value for kv in message.resource_logs[0].resource.attributes] == ["ox-cli"]
        out += [r for resource in message.resource_logs for scope in resource.scope_logs for r in scope.log_records]
    return out


def attributes(record: LogRecord) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value") for kv in record.attributes}


def test_every_received_event_is_exported_scrubbed(sink: Endpoint, tmp_path: Path, home: Path) -> None:
    daemon = DaemonProcess(tmp_path / "daemon.log").start()
    try:
        secret_path = os.path.join(str(home), "work", "secret-project")
        with connect() as sock:
            sock.sendall(telemetry_line("session:start", agent="claude", n=2, nested={"path": secret_path}))
            sock.sendall(telemetry_line("session:end", ok=False))
        names = {"app:startup", "session:start", "session:end"}
        assert wait_until(lambda: names <= {r.body.string_value for r in records(sink)}, 20), daemon.log()
        by_name = {r.body.string_value: r for r in records(sink)}
        start = attributes(by_name["session:start"])
        assert start["event.name"] == "session:start"
        assert start["ox.props.agent"] == "claude" and start["ox.props.n"] == 2
        assert start["ox.props.nested"].startswith('{"path":')
        assert str(home) not in start["ox.props.nested"]  # scrubbed as uploads are
        assert start["ox.client_id"] == status()["client_id"] and start["ox.uuid"]
        assert attributes(by_name["session:end"])["ox.props.ok"] is False
        assert by_name["session:start"].time_unix_nano > 0
        otlp = status()["otlp"]
        assert otlp["endpoint"] == sink.base_url + "/v1/logs"
        assert otlp["exported"] >= 3 and otlp["dropped"] == 0
    finally:
        assert daemon.stop() == 0
    # What it spooled on the way out was exported too.
    assert "app:shutdown" in {r.body.string_value for r in records(sink)}


def test_nothing_is_exported_while_the_user_has_opted_out(
        sink: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    daemon = DaemonProcess(tmp_path / "daemon.log").start()
    try:
        with connect() as sock:
            sock.sendall(telemetry_line("session:start", agent="claude"))
        assert wait_until(lambda: status()["otlp"]["dropped"] >= 2, 20), status()
        assert sink.requests == []
    finally:
        daemon.close()
