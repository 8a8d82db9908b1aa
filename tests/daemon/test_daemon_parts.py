"""The daemon's parts without a process: spool, protocol, Go durations, settings, client id."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ox_telemetry import paths
from ox_telemetry.daemon import protocol
from ox_telemetry.daemon.settings import Settings
from ox_telemetry.daemon.spool import Spool
from ox_telemetry.daemon.spool_sender import build_body, server_interval
from ox_telemetry.identity import client_id
from ox_telemetry.settings import go_duration


def _line(i: int, pad: int = 0) -> bytes:
    return b'{"i":%d,"pad":"%s"}' % (i, b"x" * pad)


def _drain(spool: Spool, batch: int = 7) -> list[int]:
    got = []
    while (read := spool.read_batch(batch, 1 << 20)) is not None:
        got += [json.loads(line)["i"] for line in read.lines]
        spool.commit(read)
    return got


def test_spool_keeps_order_across_segments_and_restarts(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s"), max_bytes=1 << 20, segment_bytes=300)
    spool.open()
    spool.append([_line(i) for i in range(20)])
    spool.append([_line(i) for i in range(20, 50)])
    assert spool.pending == 50
    first = spool.read_batch(10, 1 << 20)
    assert first is not None and [json.loads(x)["i"] for x in first.lines] == list(range(10))
    spool.commit(first)
    spool.close()
    reopened = Spool(str(tmp_path / "s"), max_bytes=1 << 20, segment_bytes=300)
    reopened.open()
    assert reopened.pending == 40
    assert _drain(reopened) == list(range(10, 50))
    assert reopened.pending == 0
    assert len(os.listdir(tmp_path / "s")) <= 3  # sent segments are gone (newest + cursor stay)


def test_spool_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s"), max_bytes=10_000, segment_bytes=2_000)
    spool.open()
    for i in range(200):
        spool.append([_line(i, pad=80)])
    assert spool.size() <= 10_000 + 2_000
    assert spool.dropped > 0 and spool.pending + spool.dropped == 200
    got = _drain(spool)
    assert got == list(range(200 - len(got), 200))  # the newest survive, in order
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700


def test_spool_never_drops_under_a_batch_in_flight(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s"), max_bytes=4_000, segment_bytes=1_000)
    spool.open()
    spool.append([_line(i, pad=50) for i in range(10)])
    batch = spool.read_batch(5, 1 << 20)
    assert batch is not None
    for i in range(10, 100):
        spool.append([_line(i, pad=50)])
    spool.commit(batch)
    rest = _drain(spool)
    assert rest[:5] == [5, 6, 7, 8, 9]  # the pinned segment stayed
    assert spool.pending == 0 and spool.dropped + len(rest) + 5 == 100


def test_spool_closes_a_torn_line_and_skips_it(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    spool = Spool(str(directory))
    spool.open()
    spool.append([_line(1)])
    spool.close()
    segment = next(p for p in directory.iterdir() if p.suffix == ".jsonl")
    with open(segment, "ab") as f:
        f.write(b'{"i":2,"tor')  # kill -9 in the middle of a write
    reopened = Spool(str(directory))
    reopened.open()
    reopened.append([_line(3)])
    batch = reopened.read_batch(10, 1 << 20)
    assert batch is not None and batch.lines == [_line(1), b'{"i":2,"tor', _line(3)]
    _body, count = build_body("cid", batch.lines)
    assert count == 0  # none of these is a spool event line: all skipped, none fatal


def test_spool_line_round_trips_to_the_upload_format() -> None:
    raw = b'{"type":"telemetry","payload":{"event":"sync:complete","props":{"ok":true,"n":"\\u00e9"}}}'
    message = protocol.decode(raw)
    assert protocol.telemetry_error(message) is None
    line = protocol.spool_line(raw, protocol.Stamp())
    body, count = build_body("client-1", [line, protocol.own_event_line("app:startup", {"a": 1})])
    decoded = json.loads(body)
    assert count == 2 and decoded["clientid"] == "client-1"
    event = decoded["events"][0]
    assert event["event"] == "sync:complete" and event["props"] == {"ok": True, "n": "é"}
    assert set(event) == {"uuid", "ts", "tslocal", "event", "props"}


def test_uuid_is_version_4() -> None:
    import uuid

    for _ in range(100):
        value = uuid.UUID(protocol.new_uuid())
        assert value.version == 4 and value.variant == uuid.RFC_4122


def test_tslocal_is_rfc3339_with_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    protocol.Stamp._second = -1
    try:
        stamp = protocol.Stamp()
        assert stamp.tslocal[-6:] in ("-07:00", "-08:00") and stamp.tslocal[10] == "T"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
        protocol.Stamp._second = -1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("300ms", 0.3), ("2h45m0.5s", 9900.5),
     ("0", 0.0), ("1us", 1e-6), ("1µs", 1e-6), (".5m", 30.0), ("", None), ("5", None), ("-5s", None),
     ("5x", None), ("1h 30m", None), ("m", None)],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_server_interval_is_clamped() -> None:
    assert server_interval("1s") == 10.0
    assert server_interval("48h") == 86400.0
    assert server_interval("2m") == 120.0
    assert server_interval("soon") is None and server_interval(None) is None


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().interval == 60.0
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_INTERVAL", "0.001")
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_TUNING", "cooldown=0.2, batch=7,bogus=1,base=x")
    settings = Settings.from_env()
    assert settings.interval == 0.05 and settings.cooldown == 0.2 and settings.batch == 7 and settings.base == 1.0


def test_allowed_queue_paths(home: Path) -> None:
    assert protocol.allowed_queue_path("/p/.sageox/cache/telemetry.jsonl")
    assert protocol.allowed_queue_path(os.path.join(paths.user_cache_dir(), "telemetry-abc.jsonl"))
    assert not protocol.allowed_queue_path(os.path.join(paths.user_cache_dir(), "other.jsonl"))
    assert not protocol.allowed_queue_path("/tmp/telemetry-abc.jsonl")
    assert not protocol.allowed_queue_path("/p/.sageox/cache/telemetry.jsonl.sending")


def test_client_id_created_once_with_mode_0600(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = client_id()
    assert client_id() == first
    assert stat.S_IMODE(os.stat(paths.client_id_path()).st_mode) == 0o600
    monkeypatch.setenv("SAGEOX_CLIENT_ID", "override")
    assert client_id() == "override"


class _FakeTransport:
    """Answers from a script of (status, headers) and records each request."""

    def __init__(self, *answers: tuple[int, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[dict[str, str], bytes]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        from ox_telemetry.transport import HTTPResponse

        self.sent.append((dict(headers), body))
        status, extra = self.answers.pop(0) if self.answers else (200, {})
        return HTTPResponse(status, extra)


def _uploader(tmp_path: Path, transport: _FakeTransport, events: int) -> Any:
    from ox_telemetry.daemon.spool_sender import SpoolSender

    spool = Spool(str(tmp_path / "s"))
    spool.open()
    spool.append([protocol.own_event_line("e", {"n": i}) for i in range(events)])
    return SpoolSender(spool, transport, "http://x/tevents", "cid", Settings(base=0.01, cap=600))


def test_uploader_honours_retry_after_then_delivers(tmp_path: Path) -> None:
    import asyncio
    import gzip
    import time

    transport = _FakeTransport((503, {"Retry-After": "2"}))
    uploader = _uploader(tmp_path, transport, 1200)
    assert asyncio.run(uploader.send()) is False
    assert uploader.in_backoff() and uploader.status()["backoff_s"] >= 1.9  # never sooner than Retry-After
    assert uploader.status()["last_error"] == "HTTP 503" and uploader.spool.pending == 1200
    uploader._next_attempt = time.monotonic()  # the backoff has passed
    assert asyncio.run(uploader.send()) is True
    sizes = [len(json.loads(gzip.decompress(body))["events"]) for _, body in transport.sent[1:]]
    assert sizes == [500, 500, 200] and uploader.delivered == 1200 and uploader.spool.pending == 0
    assert all(h["Content-Encoding"] == "gzip" for h, _ in transport.sent)


def test_uploader_drops_refused_batches_and_falls_back_from_gzip(tmp_path: Path) -> None:
    import asyncio

    transport = _FakeTransport((415, {}), (200, {"X-SageOx-Interval": "2m"}), (422, {}))
    uploader = _uploader(tmp_path, transport, 600)
    assert asyncio.run(uploader.send()) is True
    assert [h.get("Content-Encoding") for h, _ in transport.sent] == ["gzip", None, None]
    assert uploader.delivered == 500 and uploader.dropped["rejected"] == 100
    assert uploader.interval == 120.0 and uploader.spool.pending == 0


def test_backoff_grows_with_full_jitter_up_to_the_cap(tmp_path: Path) -> None:
    import asyncio
    import time

    transport = _FakeTransport(*[(500, {})] * 40)
    uploader = _uploader(tmp_path, transport, 1)
    delays = []
    for _ in range(30):
        asyncio.run(uploader.send())
        delays.append(uploader._next_attempt - time.monotonic())
    assert max(delays) <= 600 and max(delays[-10:]) > 10  # capped at 10 minutes, and it does grow
    assert all(d <= 0.01 * 2 ** i + 0.01 for i, d in enumerate(delays[:10]))


def test_upload_scrubs_every_string_prop_value() -> None:
    raw = json.dumps({"type": "telemetry", "payload": {"event": "e", "props": {
        "who": "bob@example.com", "nested": {"list": ["mail alice@example.org", 3]}, "n": 7, "ok": True}}})
    body, count = build_body("cid", [protocol.spool_line(raw.encode(), protocol.Stamp())])
    props = json.loads(body)["events"][0]["props"]
    assert count == 1
    assert "example" not in json.dumps(props) and "<redacted:email>" in props["who"]
    assert props["nested"]["list"][1] == 3 and props["n"] == 7 and props["ok"] is True
