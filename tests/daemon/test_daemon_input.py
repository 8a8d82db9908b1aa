"""Bad input never stops the daemon: each case gets its precise error (or a log), then good input works."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from daemon_helpers import DaemonProcess, connect, read_line, request, status, telemetry_line

from loopback import Endpoint, wait_until
from reference_vectors import VECTORS


def _answer(raw: bytes) -> dict[str, Any] | None:
    with connect() as sock:
        sock.sendall(raw)
        return read_line(sock)


def _only_one_connection() -> bool:
    """Whether the status request asking this is the daemon's only connection (False while it refuses)."""
    answer = request("status") or {}
    return bool((answer.get("data") or {}).get("connections") == 1)


def _good_message_delivered(endpoint: Endpoint, name: str) -> None:
    with connect() as sock:
        sock.sendall(telemetry_line(name, ok=True) + b'{"type":"flush"}\n')
        answer = read_line(sock)
    assert answer is not None and answer["success"] is True, answer
    assert [e["props"] for e in endpoint.accepted_events() if e["event"] == name] == [{"ok": True}]


BAD_LINES = [
    (b"\xff\xfe garbage \x00\x01\n", "invalid JSON: not UTF-8"),
    (b"{not json\n", "invalid JSON: Expecting property name enclosed in double quotes"),
    (b'{"type":"ping","x":NaN}\n', "invalid JSON: NaN is not valid JSON"),
    (b"[1,2]\n", "message must be a JSON object, not list"),
    (b'{"payload":{}}\n', "message.type must be a string"),
    (b'{"type":"reboot"}\n', "unknown message type 'reboot'"),
    (b'{"type":"status","payload":[]}\n', "status: payload must be an object"),
    (b'{"type":"flush_queue","payload":{"queue_path":"/etc/passwd","url":"http://x"}}\n',
     "flush_queue: queue_path must be a project queue"),
    (b'{"type":"flush_queue","payload":{"queue_path":"rel/.sageox/cache/telemetry.jsonl","url":"http://x"}}\n',
     "flush_queue: queue_path must be absolute and normalised"),
    (b'{"type":"flush_queue","payload":{"queue_path":"/p/../etc/.sageox/cache/telemetry.jsonl","url":"x"}}\n',
     "flush_queue: queue_path must be absolute and normalised"),
    (b'{"type":"flush_queue","payload":{"queue_path":"/p/.sageox/cache/telemetry.jsonl","url":"file:///x"}}\n',
     "flush_queue: payload.url must be an http:// or https:// URL"),
]


def test_bad_lines_get_precise_errors(daemon: DaemonProcess) -> None:
    for raw, error in BAD_LINES:
        answer = _answer(raw)
        assert answer is not None and answer["success"] is False
        assert answer["error"].startswith(error), answer
        assert request("ping")["success"] is True  # type: ignore[index]


def test_bad_input_storm_then_good_message_is_delivered(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    # Wrong payload shapes of one-way messages: dropped, logged, counted; no answer expected.
    wrong = [
        {"type": "telemetry"}, {"type": "telemetry", "payload": "x"}, {"type": "telemetry", "payload": {}},
        {"type": "telemetry", "payload": {"event": ""}}, {"type": "telemetry", "payload": {"event": 7}},
        {"type": "telemetry", "payload": {"event": "e" * 257}},
        {"type": "telemetry", "payload": {"event": "e", "props": [1]}},
    ]
    with connect() as sock:
        sock.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in wrong) + b'{"type":"ping"}\n')
        assert read_line(sock)["success"] is True  # type: ignore[index]
    assert status()["dropped"]["invalid"] == len(wrong)
    assert wait_until(lambda: "payload.event must be a non-empty string" in daemon.log(), 5)

    # A 2 MiB line: an error answer, then that connection is closed.
    with connect() as sock:
        try:
            sock.sendall(b'{"type":"telemetry","payload":{"event":"big","props":{"x":"' + b"a" * (2 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_line(sock)
        assert answer is not None and answer["error"] == "line longer than 1048576 bytes"
        try:
            assert sock.recv(10) == b""  # closed
        except ConnectionResetError:
            pass  # closed with our unread bytes still in its buffer

    # A partial line, then the sender goes away: nothing of it is spooled.
    before = status()["received"]
    with connect() as sock:
        sock.sendall(telemetry_line("partial")[:-10])
    assert status()["received"] == before

    # 200 connections at once: at most 100 are held, the rest wait in the backlog (never answered
    # "too many" and closed unread); held idle ones are closed soon, so a status request still gets in.
    assert wait_until(_only_one_connection)  # the earlier ones are gone
    opened: list[socket.socket] = []
    try:
        for _ in range(200):
            opened.append(connect(timeout=5))
        answer = lambda: request("status", timeout=2.0) or {}  # noqa: E731
        assert wait_until(lambda: answer().get("success") is True, 10)
        assert status()["connections"] <= 101
    finally:
        for sock in opened:
            sock.close()
    assert wait_until(_only_one_connection)  # once the daemon has seen them close, it serves again
    _good_message_delivered(endpoint, "after-storm")


def test_idle_connections_are_closed(daemon_env: Endpoint, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_TUNING", "idle=0.3")
    daemon = DaemonProcess(tmp_path / "d.log").start()
    try:
        with connect() as sock:
            started = time.monotonic()
            assert sock.recv(10) == b""  # closed by the daemon, not by us
            assert time.monotonic() - started < 4
    finally:
        daemon.stop()


def test_ipc_vector_is_accepted_and_uploaded_as_the_reference_does(
    daemon: DaemonProcess, endpoint: Endpoint, home: Any
) -> None:
    with open(VECTORS / "ipc_telemetry.ndjson", "rb") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    with connect() as sock:
        sock.sendall(b"\n".join(lines) + b'\n{"type":"flush"}\n')
        assert read_line(sock)["success"] is True  # type: ignore[index]
    with open(VECTORS / "daemon_upload.json", encoding="utf-8") as f:
        reference = json.load(f)
    sent = next(e for e in endpoint.accepted_events() if e["event"] == "sync:complete")
    assert set(sent) == set(reference["events"][0])
    assert sent["props"] == json.loads(lines[0])["payload"]["props"]
    assert len(sent["uuid"]) == 36 and sent["uuid"][14] == "4"
    assert sent["tslocal"][:4].isdigit() and (sent["tslocal"].endswith("Z") or sent["tslocal"][-3] == ":")
    assert abs(sent["ts"] / 1000 - time.time()) < 60


def test_send_to_daemon_bursts_are_all_taken_in(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    from ox_telemetry import Client

    client = Client("s", enabled=True, version="3.2.1")
    # One connection each, as fast as a loop opens them; fewer than the accept backlog (1024), since
    # a CLI never waits for the daemon: past a full backlog its event is dropped, by design.
    for i in range(500):
        client.send_to_daemon("burst", {"i": i})
    assert wait_until(lambda: status()["received"] >= 501, 20), status()
    assert request("flush")["success"] is True  # type: ignore[index]
    got = [e["props"] for e in endpoint.accepted_events() if e["event"] == "burst"]
    assert sorted(p["i"] for p in got) == list(range(500))
    assert got[0]["app_type"] == "ox" and got[0]["app_version"] == "3.2.1"
