"""Issue 15, item 4: one deeply nested event never stops the daemon's intake or upload, nor costs the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon_helpers import DaemonProcess, connect, status, telemetry_line

from loopback import Endpoint, wait_until
from ox_telemetry import _jsonlite, paths
from ox_telemetry.daemon.spool import Spool


def _nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep, built without recursion."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _deep_line(depth: int) -> bytes:
    """A valid ``telemetry`` line whose props nest ``depth`` levels (json.dumps would recurse too far)."""
    return b'{"type":"telemetry","payload":{"event":"deep","props":{"x":' + b"[" * depth + b"]" * depth + b"}}}\n"


def _delivered(endpoint: Endpoint, *names: str) -> bool:
    seen = {e["event"] for e in endpoint.accepted_events()}
    return all(name in seen for name in names)


def test_600_deep_props_then_a_normal_event_is_delivered(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    with connect() as sock:
        sock.sendall(_deep_line(600))
    with connect() as sock:
        sock.sendall(telemetry_line("after-deep", ok=True))
    assert wait_until(lambda: _delivered(endpoint, "after-deep"), 10), daemon.log()
    assert "deep" not in {e["event"] for e in endpoint.accepted_events()}
    assert status()["dropped"]["invalid"] == 1


def test_5000_deep_line_costs_only_itself_in_its_write(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    with connect() as sock:
        sock.sendall(telemetry_line("before", n=1) + _deep_line(5000) + telemetry_line("after", n=2))
    assert wait_until(lambda: _delivered(endpoint, "before", "after"), 10), daemon.log()
    assert status()["dropped"]["invalid"] == 1
    assert _ping_ok()


def _ping_ok() -> bool:
    with connect() as sock:
        sock.sendall(b'{"type":"ping"}\n')
        return json.loads(sock.recv(4096)).get("success") is True


def test_a_deep_line_already_in_the_spool_does_not_stop_uploads_after_a_restart(
    daemon_env: Endpoint, tmp_path: Path
) -> None:
    # Left by an older daemon that took it in: the upload must skip it, count it and send the rest.
    spool = Spool(paths.daemon_spool_dir())
    spool.open()
    deep = _jsonlite.dumps({"type": "telemetry", "payload": {"event": "deep", "props": {}}})
    deep_line = b'{"uuid":"u1","ts":1,"tslocal":"x","msg":' + deep.encode().replace(
        b'"props":{}', b'"props":{"x":' + b"[" * 600 + b"]" * 600 + b"}"
    ) + b"}"
    spool.append([deep_line])
    spool.close()
    proc = DaemonProcess(tmp_path / "d.log").start()
    try:
        with connect() as sock:
            sock.sendall(telemetry_line("after-restart"))
        assert wait_until(lambda: _delivered(daemon_env, "after-restart"), 10), proc.log()
        assert status()["dropped"]["malformed"] == 1
    finally:
        proc.close()


def test_limits_are_enforced_where_json_enters_and_leaves() -> None:
    from ox_telemetry.scrub import scrub_value

    limit = _jsonlite.MAX_DEPTH
    assert _jsonlite.loads(json.dumps(_nested(limit))) == _nested(limit)
    assert _jsonlite.dumps(_nested(limit)).count("[") == limit
    for depth in (limit + 1, 600, 100_000):
        text, value = "[" * depth + "]" * depth, _nested(depth)
        for call, arg in ((_jsonlite.loads, text), (_jsonlite.dumps, value), (scrub_value, value)):
            try:
                call(arg)
            except ValueError as exc:
                assert f"{limit} levels" in str(exc)
            else:
                raise AssertionError(f"{call.__name__}: depth {depth} accepted")
    looped: dict[str, Any] = {}
    looped["self"] = looped
    try:
        _jsonlite.dumps(looped)
    except ValueError:
        pass
    else:
        raise AssertionError("a self-containing dict was encoded")
